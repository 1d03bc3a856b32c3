"""The BLIP recipe: pre-train a tiny BLIP from scratch on the shapes world with its three objectives
(ITC + ITM with hard negatives + LM, Li et al. 2022, Sec. 3.2), then read it out the three ways BLIP
is used: captions, retrieval (ITC ranking, ITM re-ranking) and, after a short fine-tune, VQA.

    model, history, result = train_blip(steps=500)
    result["captions"]["held_out"]   # {"exact": .., "color": .., "shape": .., "where": ..}
    result["retrieval"]["train"]     # {"i2t_itc": .., "t2i_itc": .., "i2t_itm": .., "t2i_itm": .., "chance": ..}

The pre-training model (models/blip_pretrain.py) names its parts as the HF classes do, so the
trained weights move into BlipForConditionalGeneration / BlipForImageTextRetrieval /
BlipForQuestionAnswering with plain load_state_dict (`captioner`, `retriever`, `vqa_model` below).

Special tokens: the shapes tokenizer's <bos> plays [CLS] and its <eos> plays [SEP]; BLIP's [DEC]
(the decoder's bos) and [ENC] (first token of the image-grounded encoder) are two more ids after
the vocabulary.
"""
import json
import random
import time
from pathlib import Path

import torch
from torch import nn

from ..data.shapes import EVAL_START, ShapesWorld
from ..data.shapes_tokenizer import BlipShapesTokenizer
from ..evaluation.captions import caption_quality
from ..evaluation.retrieval import retrieval_recall, with_first_token
from ..models.blip import (BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval,
                           BlipForQuestionAnswering, blip_vision_config)
from ..models.blip_pretrain import BlipForPretraining
from ..processing.processors import processor_from_config
from ..text.bert import BertConfig
from .dual_encoder import pairs
from .export import save_pretrained
from . import distributed
from .loop import TrainConfig, options_from_args, train
from .plot import save_loss_curve

# A model small enough to learn in a few CPU minutes; 32x32 images in 8x8 patches (16 tokens).
# VQA's answer decoder cross-attends to the question states, so text and vision share one width.
TINY = dict(image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp=128, embed_dim=64)
RECIPE = dict(lr=2e-3, batch_size=24, steps=1000)


def tiny_config(tokenizer, size=TINY, label_smoothing=0.1):
    """Our BlipConfig for a tiny BLIP that speaks the shapes tokenizer (BLIP trains its LM with smoothing 0.1)."""
    vision = blip_vision_config(image_size=size["image_size"], patch_size=size["patch_size"],
                                hidden_size=size["width"], num_layers=size["layers"], num_heads=size["heads"],
                                intermediate_size=size["mlp"])
    text = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=size["width"], num_layers=size["layers"],
                      num_heads=size["heads"], intermediate_size=size["mlp"],
                      max_position_embeddings=tokenizer.max_length, encoder_hidden_size=size["width"],
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.dec_token_id,
                      sep_token_id=tokenizer.eos_token_id, label_smoothing=label_smoothing)
    return BlipConfig(vision=vision, text=text, image_text_hidden_size=size["embed_dim"])


@torch.no_grad()
def init_embeddings(model: BlipForPretraining, std=0.02, vision_position_std=1.0):
    """Starting tables for training from scratch (loading a checkpoint overwrites them).

    Text: BERT's N(0, 0.02). nn.Embedding starts at N(0, 1) and the LM head is tied to the word table:
    logits ~8x too large, a first LM loss near 20 instead of ln V.
    Vision: the ViT starts its [CLS] and position table at zero. BLIP draws positions at 0.02, but at
    that scale "where is the shape" is drowned by the patch contents and a tiny ViT does not learn it
    in a few hundred steps (measured with a linear probe on [CLS]: still ~chance after 300 steps at
    0.02, > 90% after 100 steps at 1.0, the scale of the patch embeddings)."""
    text = [model.text_encoder.embeddings]
    if model.text_decoder.embeddings is not model.text_encoder.embeddings:  # share_text=False
        text.append(model.text_decoder.embeddings)
    for emb in text:
        nn.init.normal_(emb.word_embeddings.weight, std=std)
        nn.init.normal_(emb.position_embeddings.weight, std=std)
    nn.init.normal_(model.vision_model.cls_token, std=std)
    nn.init.normal_(model.vision_model.pos_embed, std=vision_position_std)
    return model


def processor_config(image_size):
    return dict(image_processor_type="BlipImageProcessor", size={"height": image_size, "width": image_size})


def make_processor(image_size):
    cfg = processor_config(image_size)
    return processor_from_config(cfg["image_processor_type"], cfg)


def pretrain_step(model, batch, generator=None):
    """ITC + ITM + LM on one batch; logs each loss and the ITM accuracy on its 1 positive : 2 hard negatives."""
    out = model(**batch, generator=generator)
    itm_acc = (out.itm_logits.argmax(-1) == out.itm_labels).float().mean().item()
    return out.loss, {"itc": out.loss_itc.item(), "itm": out.loss_itm.item(), "lm": out.loss_lm.item(),
                      "itm_acc": itm_acc}


# -- the trained weights in the HF-shaped classes ------------------------------------------------------

def _take(target, source, names):
    for name in names:
        getattr(target, name).load_state_dict(getattr(source, name).state_dict())
    return target.eval()


def captioner(model: BlipForPretraining):
    """The image-grounded decoder as a BlipForConditionalGeneration (a copy; shared modules are duplicated)."""
    return _take(BlipForConditionalGeneration(model.config), model, ("vision_model", "text_decoder"))


def retriever(model: BlipForPretraining):
    return _take(BlipForImageTextRetrieval(model.config), model,
                 ("vision_model", "text_encoder", "vision_proj", "text_proj", "itm_head"))


def vqa_model(model: BlipForPretraining):
    """BLIP starts VQA from the pre-trained encoder (question) and decoder (answer), Sec. 5.3."""
    return _take(BlipForQuestionAnswering(model.config), model, ("vision_model", "text_encoder", "text_decoder"))


def qa_batches(world, tokenizer, processor, batch_size, start=0, seed=0):
    """Endless batches of (image, one of its questions, the one-word answer): the question as the
    image-grounded encoder reads it ([ENC] first), the answer as [DEC] word [SEP] (labels)."""
    rng, index = random.Random(seed), start
    while True:
        scenes = world.scenes(batch_size, "train", start=index)
        index += batch_size
        qa = [rng.choice([q for q in s.questions if not q[0].startswith("how many")] or s.questions)
              for s in scenes]
        yield vqa_inputs(tokenizer, processor, scenes, [q for q, _ in qa], [a for _, a in qa])


def vqa_inputs(tokenizer, processor, scenes, questions, answers=None):
    q = tokenizer(questions)
    batch = {"input_ids": with_first_token(q["input_ids"], tokenizer.enc_token_id),
             "attention_mask": q["attention_mask"],
             "pixel_values": processor([s.image for s in scenes])["pixel_values"]}
    if answers is not None:
        a = tokenizer(answers)["input_ids"]  # one word each: (B, 3), no padding
        batch["labels"] = with_first_token(a, tokenizer.dec_token_id)
    return batch


@torch.no_grad()
def answer(model: BlipForQuestionAnswering, tokenizer, scenes, questions):
    batch = vqa_inputs(tokenizer, make_processor(model.config.vision.image_size), scenes, questions)
    ids = model.generate(**batch, max_new_tokens=3)
    return [tokenizer.decode(row) for row in ids]


def vqa_accuracy(model, tokenizer, world, split, count=100, start=EVAL_START):
    """Accuracy over every question (the trivial "how many" excluded) of `count` fresh scenes."""
    scenes, questions, truths = [], [], []
    for s in world.scenes(count, split, start=start):
        for q, a in s.questions:
            if not q.startswith("how many"):
                scenes.append(s), questions.append(q), truths.append(a)
    predicted = answer(model, tokenizer, scenes, questions)
    return sum(p == t for p, t in zip(predicted, truths)) / len(truths)


def finetune_vqa(model: BlipForPretraining, tokenizer, steps=150, lr=1e-3, batch_size=32, seed=0, progress=True,
                 **train_options):
    """BlipForQuestionAnswering from the pre-trained weights, trained on the world's questions."""
    torch.manual_seed(seed)
    size = model.config.vision.image_size
    world = ShapesWorld(image_size=size, max_shapes=1)
    vqa = vqa_model(model)
    batches = qa_batches(world, tokenizer, make_processor(size), batch_size, start=seed * 10**6 + 5 * 10**5, seed=seed)
    history = train(vqa, batches, lambda m, b: m(**b).loss,
                    TrainConfig(steps=steps, lr=lr, progress=progress, desc="blip vqa", **train_options))
    return vqa.eval(), history


# -- the whole recipe -------------------------------------------------------------------------------------

def train_blip(steps=None, seed=0, device="cpu", lr=None, batch_size=None, size=TINY, share_text=True,
               progress=True, eval_count=200, evaluate=True, **train_options):
    """Pre-train a tiny BLIP from scratch with ITC + ITM + LM; returns (model, history, result)."""
    steps = steps or RECIPE["steps"]
    batch_size = batch_size or RECIPE["batch_size"]
    torch.manual_seed(seed)
    world = ShapesWorld(image_size=size["image_size"], max_shapes=1)
    tokenizer = BlipShapesTokenizer()
    processor = make_processor(size["image_size"])
    model = init_embeddings(BlipForPretraining(tiny_config(tokenizer, size), share_text=share_text,
                                               enc_token_id=tokenizer.enc_token_id))
    # Distinct captions per batch: a repeated caption would be a false negative for ITC and ITM.
    batches = pairs(world, tokenizer, processor, batch_size, start=seed * 10**6)
    generator = torch.Generator().manual_seed(seed)  # the hard-negative draws
    config = TrainConfig(steps=steps, lr=lr or RECIPE["lr"], device=device, progress=progress, desc="blip",
                         generators=(generator,), **train_options)  # its state goes into checkpoints
    start = time.time()
    history = train(model, batches, lambda m, b: pretrain_step(m, b, generator), config)
    model.to("cpu").eval()
    result = dict(model="blip", steps=steps, batch_size=batch_size, seconds=round(time.time() - start, 1),
                  loss_first=history.mean_loss(first=10), loss_last=history.mean_loss(last=10),
                  losses_first={k: _mean(history.metrics[k][:10]) for k in ("itc", "itm", "lm")},
                  losses_last={k: _mean(history.metrics[k][-10:]) for k in ("itc", "itm", "lm")})
    if evaluate:
        result.update(evaluate_blip(model, tokenizer, world, processor, eval_count))
    return model, history, result


def _mean(values):
    return sum(values) / len(values)


def evaluate_blip(model, tokenizer, world, processor, count=200):
    cap, ret = captioner(model), retriever(model)
    splits = (("train", "train"), ("held_out", "test"))
    return {"captions": {name: caption_quality(cap, tokenizer, world, processor, split, count)
                         for name, split in splits},
            "retrieval": {"train": retrieval_recall(ret, tokenizer, world, processor, "train", 32),
                          "held_out": retrieval_recall(ret, tokenizer, world, processor, "test", 18)}}


# -- saving a run: HF model folders that weights_convert and transformers both load -----------------------

def blip_hf_config(cfg: BlipConfig, architecture):
    """BlipConfig (ours) -> the config.json dict transformers' BlipConfig writes (the fields weights_convert reads)."""
    v, t = cfg.vision, cfg.text
    vision = dict(model_type="blip_vision_model", image_size=v.image_size, patch_size=v.patch_size,
                  hidden_size=v.hidden_size, intermediate_size=v.intermediate_size, num_hidden_layers=v.num_layers,
                  num_attention_heads=v.num_heads, hidden_act=v.hidden_act, layer_norm_eps=v.layer_norm_eps)
    text = dict(model_type="blip_text_model", vocab_size=t.vocab_size, hidden_size=t.hidden_size,
                encoder_hidden_size=t.encoder_hidden_size, intermediate_size=t.intermediate_size,
                num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
                max_position_embeddings=t.max_position_embeddings, hidden_act=t.hidden_act,
                layer_norm_eps=t.layer_norm_eps, is_decoder=t.cross_attention, pad_token_id=t.pad_token_id,
                bos_token_id=t.bos_token_id, sep_token_id=t.sep_token_id, eos_token_id=t.sep_token_id,
                label_smoothing=t.label_smoothing)
    return dict(architectures=[architecture], model_type="blip", image_text_hidden_size=cfg.image_text_hidden_size,
                text_config=text, vision_config=vision)


def save_run(model, tokenizer, history, result, out):
    """out/captioner and out/retrieval (HF folders), the vocabulary, the loss history, its plot, the figures."""
    out = Path(out)
    image_size = model.config.vision.image_size
    for name, part, arch in (("captioner", captioner(model), "BlipForConditionalGeneration"),
                             ("retrieval", retriever(model), "BlipForImageTextRetrieval")):
        save_pretrained(part, out / name, blip_hf_config(model.config, arch))
        (out / name / "preprocessor_config.json").write_text(json.dumps(processor_config(image_size), indent=2) + "\n")
    (out / "shapes_vocab.json").write_text(json.dumps(tokenizer.vocab + ["[DEC]", "[ENC]"]) + "\n")
    (out / "history.json").write_text(json.dumps(history.as_dict()) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    save_loss_curve(history, out / "loss.png", title="tiny BLIP (ITC + ITM + LM) on the shapes world")
    return out


def run(args):
    """`python -m minivlm train blip`: pre-train, evaluate, fine-tune VQA briefly, run CapFilt, save."""
    from .capfilt import capfilt_demo
    options = options_from_args(args)
    model, history, result = train_blip(steps=args.steps, seed=args.seed, device=args.device,
                                        batch_size=getattr(args, "batch_size", None), **options)
    tokenizer, world = BlipShapesTokenizer(), ShapesWorld(image_size=model.config.vision.image_size, max_shapes=1)
    processor = make_processor(model.config.vision.image_size)
    vqa, _ = finetune_vqa(model, tokenizer, seed=args.seed, **options)
    result["vqa"] = {name: vqa_accuracy(vqa, tokenizer, world, split) for name, split in
                     (("train", "train"), ("held_out", "test"))}
    report = capfilt_demo(retriever(model), tokenizer, world, processor, captioner=captioner(model), seed=args.seed)
    result["capfilt"] = {k: v for k, v in report.items() if not k.endswith("records")}
    if not distributed.is_main():  # under torchrun rank 0 writes and reports
        return result
    result["out"] = str(save_run(model, tokenizer, history, result, args.out))
    c, r = result["captions"], result["retrieval"]
    print(f"captions exact {c['train']['exact']:.0%} (held-out combinations {c['held_out']['exact']:.0%}); "
          f"R@1 i2t/t2i ITC {r['train']['i2t_itc']:.0%}/{r['train']['t2i_itc']:.0%}, ITM re-ranked "
          f"{r['train']['i2t_itm']:.0%}/{r['train']['t2i_itm']:.0%}; CapFilt removed "
          f"{result['capfilt']['corrupted']['removed']}/{result['capfilt']['corrupted']['n']} corrupted, kept "
          f"{result['capfilt']['clean']['kept']}/{result['capfilt']['clean']['n']} clean; "
          f"{result['steps']} steps in {result['seconds']:.0f}s; saved to {result['out']}", flush=True)
    for name in ("captions", "retrieval"):
        for split in result[name].values():
            split.pop("examples", None)
    return result
