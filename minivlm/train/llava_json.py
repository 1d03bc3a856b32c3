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
tokenizer and image processor files of LLAVA_DIR, plus history.json, log, loss.png, metrics.json, and
its own card (README.md) and evaluation.json: the recipe, the data, the steps and the loss per trained
token on the first records before and after training (LLAVA_DIR's card and figures are not copied).

The records' image paths are resolved against --images DIR, or the JSON's folder without it; when not
one image is found there, the run stops and shows where it looked for the first one.
"""
import json
import shutil
import time
from pathlib import Path

import torch

from ..errors import UsageError
from ..data.llava_dataset import (LabelMaskError, LlavaCollator, LlavaDataset, check_records, load_records,
                                  tokenize_conversation)
from ..models.llava import freeze
from ..processing.conversation import render
from . import distributed
from .batches import ShardedBatches
from .card import DESCRIPTIONS, write_card
from .llava import llava_loss
from .loop import TrainConfig, train, trained_tokens
from .plot import save_loss_curve

DEFAULTS = {1: dict(template="plain", lr=2e-3), 2: dict(template="vicuna_v1", lr=2e-5)}
WEIGHT_FILES = (".safetensors", ".bin", ".index.json")
EVAL_RECORDS = 32   # the records whose loss the card reports, before and after training


def first_image(record):
    """The record's first image path (a string), or None."""
    image = record.get("image") if isinstance(record, dict) else None
    image = image[0] if isinstance(image, (list, tuple)) and image else image
    return image if isinstance(image, (str, Path)) else None


def check_image_folder(records, image_folder):
    """Refuse a folder under which not one record's image exists: every record would be skipped as
    "not found" (usually --images is missing or wrong), which deserves one clear sentence."""
    named = [(r, first_image(r)) for r in records if first_image(r) is not None]
    if not named or any((Path(image_folder) / image).is_file() for _, image in named):
        return
    record, image = named[0]
    raise UsageError(f"not one of the {len(named)} records' images exists under {image_folder}: image paths are "
                     f"resolved against --images DIR (without it, the JSON's folder); e.g. record "
                     f"{record.get('id', 0)!r} -> {Path(image_folder) / image} is not a file. Pass --images DIR, "
                     f"the folder its 'image' paths ({image!r}) are relative to")


def text_problem(record, tokenizer, template):
    """Why the record's text cannot be rendered or label-masked, or None (no image is read)."""
    try:
        tokenize_conversation(render(template, record["conversations"]), tokenizer, record.get("id", "?"))
    except (LabelMaskError, ValueError) as e:
        return str(e)
    return None


def prepare(records, image_folder, tokenizer, template, on_bad):
    """(records to train on, [(id, problem)]): the structural checks, then the text checks."""
    check_image_folder(records, image_folder)
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


@torch.no_grad()
def records_loss(model, dataset, collator, count=EVAL_RECORDS, batch_size=8, device="cpu"):
    """Mean loss per trained token over the first `count` records (the model's RNG-free eval mode)."""
    was_training, n = model.training, min(count, len(dataset))
    model.eval()
    total, tokens = 0.0, 0.0
    with torch.random.fork_rng(devices=[]):  # whatever it draws, the training run's random stream is untouched
        for start in range(0, n, batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, n))])
            weight = trained_tokens(batch)
            total += weight * llava_loss(model, {k: v.to(device) if torch.is_tensor(v) else v
                                                 for k, v in batch.items()}).item()
            tokens += weight
    model.train(was_training)
    return round(total / tokens, 4) if tokens else None


def train_llava_json(data, images, start, out, stage=2, steps=None, lr=None, batch_size=8, template=None,
                     on_bad="fail", seed=0, device="cpu", progress=True, command=None, **train_options):
    """Fine-tune the LLaVA in `start` on the records of `data`; returns (model, history, result).
    images=None: the records' image paths are relative to the JSON's folder."""
    import weights_convert
    start, out = Path(start), Path(out)
    if images is None and isinstance(data, (str, Path)):
        images = Path(data).parent
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
    if len(dataset) < batch_size:
        raise UsageError(f"{len(dataset)} record(s) to train on ({len(bad)} bad, skipped), fewer than one batch of "
                         f"{batch_size}: pass --batch-size {max(1, len(dataset))} or less, or more records")
    source = ShardedBatches(dataset, collator, batch_size, seed)
    steps = steps or max(1, source.per_epoch // (distributed.world_size() * train_options.get("grad_accum", 1)))
    trainable = freeze(model, stage)
    main = distributed.is_main()
    before = records_loss(model.to(device), dataset, collator, batch_size=batch_size, device=device) if main else None
    config = TrainConfig(steps=steps, lr=lr, device=device, progress=progress, desc=f"stage {stage}",
                         loss_weight=trained_tokens, **train_options)
    history = train(model, source, llava_loss, config)
    after = records_loss(model, dataset, collator, batch_size=batch_size, device=device) if main else None
    model.to("cpu").eval()
    result = dict(stage=stage, steps=steps, records=len(records), bad_records=len(bad), template=template, lr=lr,
                  batch_size=batch_size, trainable_parameters=sum(p.numel() for n, p in model.named_parameters()
                                                                  if n in set(trainable)),
                  seconds=round(history.seconds, 1), loss_first=round(history.mean_loss(first=min(10, steps)), 4),
                  loss_last=round(history.mean_loss(last=min(10, steps)), 4),
                  records_loss=dict(records=min(EVAL_RECORDS, len(dataset)), before=before, after=after))
    if main:
        save_run(model, hf_config, start, out, history, result, bad)
        write_run_card(out, result, data, images, start, command)
        result["out"] = str(out)
    return model, history, result


def save_run(model, hf_config, start, out, history, result, bad):
    """The HF folder (weights in transformers' names, start's config and tokenizer / processor files)
    and the run's records."""
    from .export import save_pretrained
    out.mkdir(parents=True, exist_ok=True)
    for f in start.iterdir():  # its tokenizer and processor files; not its weights, config or description
        if f.is_file() and f.name != "config.json" and not f.name.endswith(WEIGHT_FILES) and f.name not in DESCRIPTIONS:
            shutil.copy2(f, out / f.name)
    save_pretrained(model, out, hf_config)
    (out / "history.json").write_text(json.dumps(history.as_dict()) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "bad_records.json").write_text(json.dumps([dict(id=i, problem=p) for i, p in bad], indent=1) + "\n")
    save_loss_curve(history, out / "loss.png", title=f"LLaVA stage {result['stage']}",
                    ylabel="loss (cross-entropy per trained token)")


def write_run_card(out, result, data, images, start, command):
    """README.md + evaluation.json of this run (train/card.py)."""
    r, measured = result, result["records_loss"]
    figures = {"stage": r["stage"], "steps": r["steps"], "records trained on": r["records"],
               "bad records (skipped)": r["bad_records"], "template": r["template"], "learning rate": r["lr"],
               "batch size": r["batch_size"], "trainable parameters": r["trainable_parameters"],
               "training loss, first steps": r["loss_first"], "training loss, last steps": r["loss_last"],
               f"loss on the first {measured['records']} records, before": measured["before"],
               f"loss on the first {measured['records']} records, after": measured["after"]}
    about = (f"A LLaVA ({'projector' if r['stage'] == 1 else 'projector + language model'} trained, vision tower "
             f"frozen) fine-tuned from `{start}` on `{data}` (images under `{images}`) by minivlm's "
             f"`train llava --data`. The figures below were measured on this run; the starting model's card and "
             f"evaluation do not apply to these weights.")
    notes = ["losses are cross-entropy per trained (reply) token",
             f"before/after: the same {measured['records']} training records; there is no held-out split, so "
             f"they show that training moved the model, not how it generalises"]
    write_card(out, f"LLaVA stage {r['stage']} on {Path(str(data)).name}", about,
               command or "python -m minivlm train llava --data ...", figures, notes,
               extra=dict(start=str(start), data=str(data), images=str(images)))


def run(args, train_options):
    """`python -m minivlm train llava --data ... --images ... --from ...` (called by train/llava.py's run)."""
    from .settings import command_line
    if not args.from_dir:
        raise UsageError("--data needs --from DIR: the LLaVA checkpoint to start from")
    if not Path(args.data).is_file():
        raise UsageError(f"--data {args.data}: no such file (expected LLaVA's JSON / JSONL of conversations)")
    if not (Path(args.from_dir) / "config.json").is_file():
        raise UsageError(f"--from {args.from_dir}: no config.json there (expected a LLaVA model folder)")
    if args.images is not None and not Path(args.images).is_dir():
        raise UsageError(f"--images {args.images}: no such folder (expected the folder the records' image paths "
                         f"are relative to)")
    started = time.time()
    _, history, result = train_llava_json(args.data, args.images, args.from_dir, args.out, stage=args.stage,
                                          steps=args.steps, lr=args.lr, batch_size=args.batch_size or 8,
                                          template=args.template, on_bad=args.on_bad_record, seed=args.seed,
                                          device=args.device, command=command_line(args), **train_options)
    if distributed.is_main():
        print(f"stage {result['stage']}: {result['steps']} steps on {result['records']} records "
              f"({result['bad_records']} bad, skipped), loss {result['loss_first']} -> {result['loss_last']}, "
              f"{time.time() - started:.0f}s; saved to {args.out}", flush=True)
    return result
