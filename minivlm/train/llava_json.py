"""LLaVA on your own data: a LLaVA-format JSON + an image folder, starting from any LLaVA checkpoint.

    python -m minivlm train llava --data conversations.json --images DIR --from LLAVA_DIR --stage 2

The records are the original repo's (llava_instruct_150k.json, blip_laion_cc_sbu_558k.json, see
data/llava_dataset.py); LLAVA_DIR is any folder weights_convert.load_pretrained reads as
LlavaForConditionalGeneration (a llava-hf checkpoint, or the shapes recipe's runs/llava). The stages
are LLaVA's (Liu et al. 2023, section 4.2): 1 trains the projector alone (feature alignment; the
'plain' template by default), 2 the projector and the language model (instruction tuning; vicuna_v1).
The vision tower stays frozen in both.

Every record is checked before training (data/llava_dataset.py's record_problem, then its text is
tokenized and its label mask checked): a bad one is named with its id and either stops the run
(--on-bad-record fail, the default) or is left out and counted (skip); bad_records.json lists them.
Batches come from ShardedBatches (a seeded permutation per epoch, each torchrun rank its own slice),
and micro-batches count by their trained tokens, so --grad-accum and torchrun give the update of one
big batch. The run folder is an HF LLaVA folder (transformers' from_pretrained loads it) with the
tokenizer and image processor files of LLAVA_DIR, plus history.json, log, loss.png, metrics.json.
"""
import json
import shutil
import time
from pathlib import Path

import torch

from ..data.llava_dataset import (LabelMaskError, LlavaCollator, LlavaDataset, check_records, load_records,
                                  tokenize_conversation)
from ..models.llava import freeze
from ..processing.conversation import render
from . import distributed
from .batches import ShardedBatches
from .llava_loss import llava_loss
from .loop import TrainConfig, train, trained_tokens
from .plot import save_loss_curve

DEFAULTS = {1: dict(template="plain", lr=2e-3), 2: dict(template="vicuna_v1", lr=2e-5)}
WEIGHT_FILES = (".safetensors", ".bin", ".index.json")


def text_problem(record, tokenizer, template):
    """Why the record's text cannot be rendered or label-masked, or None (no image is read)."""
    try:
        tokenize_conversation(render(template, record["conversations"]), tokenizer, record.get("id", "?"))
    except (LabelMaskError, ValueError) as e:
        return str(e)
    return None


def prepare(records, image_folder, tokenizer, template, on_bad):
    """(records to train on, [(id, problem)]): the structural checks, then the text checks."""
    good, bad = check_records(records, image_folder, on_bad)
    kept = []
    for i, record in enumerate(good):
        problem = text_problem(record, tokenizer, template)
        if problem is None:
            kept.append(record)
        else:
            bad.append((record.get("id", i), problem))
            if on_bad == "fail":
                raise ValueError(f"record {record.get('id', i)!r} cannot be trained on: {problem}")
    return kept, bad


def train_llava_json(data, images, start, out, stage=2, steps=None, lr=None, batch_size=8, template=None,
                     on_bad="fail", seed=0, device="cpu", progress=True, **train_options):
    """Fine-tune the LLaVA in `start` on the records of `data`; returns (model, history, result)."""
    import weights_convert
    start, out = Path(start), Path(out)
    hf_config = json.loads((start / "config.json").read_text())
    if hf_config.get("architectures", [None])[0] != "LlavaForConditionalGeneration":
        raise ValueError(f"--from {start}: expected a LlavaForConditionalGeneration folder, its config.json says "
                         f"{hf_config.get('architectures')}")
    template = template or DEFAULTS[stage]["template"]
    lr = lr or DEFAULTS[stage]["lr"]
    torch.manual_seed(seed)
    model = weights_convert.load_pretrained(start)
    tokenizer, processor = weights_convert.load_tokenizer(start), weights_convert.load_image_processor(start)
    cfg = model.config
    records, bad = prepare(load_records(data), images, tokenizer, template, on_bad)
    for rid, problem in bad[:10] if distributed.is_main() else []:
        print(f"skipped record {rid!r}: {problem}", flush=True)
    dataset = LlavaDataset(records, tokenizer, processor, image_folder=images, template=template,
                           image_token_id=cfg.image_token_index, num_image_tokens=cfg.features_per_image)
    collator = LlavaCollator(cfg.text_config.pad_token_id, max_length=cfg.text_config.max_position_embeddings,
                             image_token_id=cfg.image_token_index)
    source = ShardedBatches(dataset, collator, batch_size, seed)
    steps = steps or max(1, source.per_epoch // (distributed.world_size() * train_options.get("grad_accum", 1)))
    trainable = freeze(model, stage)
    config = TrainConfig(steps=steps, lr=lr, device=device, progress=progress, desc=f"stage {stage}",
                         loss_weight=trained_tokens, **train_options)
    history = train(model, source, llava_loss, config)
    model.to("cpu").eval()
    result = dict(stage=stage, steps=steps, records=len(records), bad_records=len(bad), template=template, lr=lr,
                  batch_size=batch_size, trainable_parameters=sum(p.numel() for n, p in model.named_parameters()
                                                                  if n in set(trainable)),
                  seconds=round(history.seconds, 1), loss_first=round(history.mean_loss(first=min(10, steps)), 4),
                  loss_last=round(history.mean_loss(last=min(10, steps)), 4))
    if distributed.is_main():
        save_run(model, hf_config, start, out, history, result, bad)
        result["out"] = str(out)
    return model, history, result


def save_run(model, hf_config, start, out, history, result, bad):
    """The HF folder (weights in transformers' names, start's config and tokenizer / processor files)
    and the run's records."""
    from .export import save_pretrained
    out.mkdir(parents=True, exist_ok=True)
    for f in start.iterdir():
        if f.is_file() and f.name != "config.json" and not f.name.endswith(WEIGHT_FILES):
            shutil.copy2(f, out / f.name)
    save_pretrained(model, out, hf_config)
    (out / "history.json").write_text(json.dumps(history.as_dict()) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bad_records.json").write_text(json.dumps([dict(id=i, problem=p) for i, p in bad], indent=1) + "\n")
    save_loss_curve(history, out / "loss.png", title=f"LLaVA stage {result['stage']}",
                    ylabel="loss (cross-entropy per trained token)")


def run(args, train_options):
    """`python -m minivlm train llava --data ... --images ... --from ...` (called by train/llava.py's run)."""
    if not args.from_dir:
        raise SystemExit("--data needs --from DIR: the LLaVA checkpoint to start from")
    started = time.time()
    _, history, result = train_llava_json(args.data, args.images, args.from_dir, args.out, stage=args.stage,
                                          steps=args.steps, lr=args.lr, batch_size=args.batch_size or 8,
                                          template=args.template, on_bad=args.on_bad_record, seed=args.seed,
                                          device=args.device, **train_options)
    if distributed.is_main():
        print(f"stage {result['stage']}: {result['steps']} steps on {result['records']} records "
              f"({result['bad_records']} bad, skipped), loss {result['loss_first']} -> {result['loss_last']}, "
              f"{time.time() - started:.0f}s; saved to {args.out}", flush=True)
    return result
