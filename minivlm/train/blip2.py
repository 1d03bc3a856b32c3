"""The BLIP-2 recipe on the shapes world, and the measured question behind it: is a Q-Former a better
bridge from a frozen image encoder to a frozen LM than LLaVA's MLP over every patch?

    shared     the CLIP tower of dual_encoder.py (frozen), a tiny Llama pre-trained on the world's
               sentences and then frozen, the character tokenizer and chat template of llava.py
    MLP arm    LLaVA's projector (linear -> gelu -> linear) on all 1 + N tower tokens, trained alone
               for stage1_steps + stage2_steps steps on one-turn exchanges (caption or question)
    Q-Former   stage 1 (models/blip2_pretrain.py): ITC + ITM + ITG against the frozen tower on
               (image, caption) pairs, the caption in the word-level shapes tokenizer (the Q-Former's
               "BERT" vocabulary); stage 2: queries + Q-Former + language_projection -> the frozen LM,
               on the same exchanges as the MLP arm, stage2_steps steps

Both arms see the same images, the same exchanges and the same number of optimiser steps at the same
batch size, so the table compares the bridges and nothing else. Accuracy per question type on unseen
images of seen colour x shape combinations and on held-out combinations (llava.evaluate), tokens per
image handed to the LM, trainable parameters and wall time.

Measured: see the README's BLIP-2 section (written from metrics.json of a default run).
"""
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..data.llava_dataset import LlavaCollator
from ..data.shapes import ShapesWorld
from ..data.shapes_tokenizer import ShapesTokenizer
from ..models.blip2 import Blip2Config, Blip2ForConditionalGeneration
from ..models.blip2_pretrain import Blip2QFormerForPretraining
from ..text.qformer import QFormerConfig
from .dual_encoder import pairs
from ..evaluation.answers import CHAT
from .llava import (TINY_LM, build_llava, caption_records, evaluate, exchange_records, llava_loss, materialise,
                    random_batches, run_setup, strip_images, text_loss)
from .loop import TrainConfig, train
from .plot import save_loss_curve

# A Q-Former as wide as the LM, 2 layers; 8 queries against the tower's 1 + 16 tokens.
QFORMER = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
RECIPE = dict(num_query_tokens=8, cross_attention_frequency=1, max_shapes=2, scenes=2000, batch_size=32,
              text_steps=200, text_lr=3e-3, stage1_steps=200, stage1_lr=1e-3, stage2_steps=400, lr=2e-3,
              clip_steps=None)
STAGE2_PARTS = ("query_tokens", "qformer", "language_projection")  # BLIP-2 stage 2: the LM and tower stay frozen


def qformer_config(tokenizer, tower, r, size=QFORMER):
    """A Q-Former reading the shapes tokenizer, cross-attending to the tower; no dropout (tiny, short runs)."""
    return QFormerConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=tokenizer.max_length,
                         pad_token_id=tokenizer.pad_token_id, encoder_hidden_size=tower.config.hidden_size,
                         cross_attention_frequency=r["cross_attention_frequency"], text_input=True,
                         text_embeddings=True, attention_dropout=0.0, hidden_dropout=0.0, **size)


def build_stage1(tower, text_config, tokenizer, image_token_index, r, seed=0):
    """The stage-1 Q-Former around the trained tower (frozen); BERT-style N(0, 0.02) tables and queries."""
    torch.manual_seed(seed)
    cfg = Blip2Config(vision_config=tower.config, qformer_config=qformer_config(tokenizer, tower, r),
                      text_config=text_config, num_query_tokens=r["num_query_tokens"],
                      image_token_index=image_token_index, image_text_hidden_size=QFORMER["hidden_size"])
    model = Blip2QFormerForPretraining(cfg)
    model.vision_model.load_state_dict(tower.state_dict())
    model.vision_model.requires_grad_(False)
    with torch.no_grad():
        for table in (model.qformer.embeddings.word_embeddings, model.qformer.embeddings.position_embeddings):
            table.weight.normal_(std=0.02)
        model.query_tokens.normal_(std=0.02)
    return model


def to_captioner(stage1, language_model):
    """Stage 2's model: the stage-1 tower, queries and Q-Former, a new language_projection, the frozen LM.
    The captioner's Q-Former has no text input, so the text tables and text MLPs stay behind."""
    cfg = stage1.config
    model = Blip2ForConditionalGeneration(replace(cfg, qformer_config=replace(
        cfg.qformer_config, text_input=False, text_embeddings=False)))
    keep = model.state_dict()
    moved = {k: v for k, v in stage1.state_dict().items() if k in keep and not k.startswith("language")}
    missing = [k for k in keep if k not in moved and not k.startswith(("language_projection", "language_model"))]
    if missing:
        raise RuntimeError(f"stage 1 lacks {missing[:5]}")
    model.load_state_dict(moved, strict=False)
    model.language_model.load_state_dict(language_model.state_dict())
    return model


def freeze_parts(model, parts):
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[0] in parts)
        if p.requires_grad:
            trainable.append(name)
    return sum(p.numel() for n, p in model.named_parameters() if n in set(trainable))


def stage1_step(model, batch):
    out = model(**batch)
    acc = (out.itm_logits.argmax(-1) == out.itm_labels).float().mean().item()
    return out.loss, {"itc": out.loss_itc.item(), "itm": out.loss_itm.item(), "itg": out.loss_itg.item(),
                      "itm_acc": acc}


def summary(history):
    return dict(steps=len(history.losses), seconds=round(history.seconds, 1),
                loss_first=round(history.mean_loss(first=10), 4), loss_last=round(history.mean_loss(last=10), 4))


def arm_result(model, histories, tokens, trainable, tokenizer, processor, world, eval_count):
    start = time.time()
    result = dict(tokens_per_image=tokens, trainable_parameters=trainable,
                  train_seconds=round(sum(h.seconds for h in histories.values()), 1),
                  **{name: summary(h) for name, h in histories.items()})
    result["seen_combos"] = evaluate(model, tokenizer, processor, world, "train", eval_count)
    result["held_out_combos"] = evaluate(model, tokenizer, processor, world, "test", eval_count)
    result["eval_seconds"] = round(time.time() - start, 1)
    return result


def train_blip2(out=None, clip_run="runs/clip", seed=0, device="cpu", progress=True, eval_count=100, lm=TINY_LM,
                **recipe):
    """Both arms on one frozen tower and one frozen LM. Returns (qformer model, mlp model, histories, result)."""
    unknown = set(recipe) - set(RECIPE)
    if unknown:
        raise ValueError(f"unknown recipe option(s) {sorted(unknown)}; known: {sorted(RECIPE)}")
    r = dict(RECIPE, **recipe)
    torch.manual_seed(seed)
    tower, _, vocab_size, tokenizer, processor = run_setup(out, clip_run, r["clip_steps"], progress)
    world = ShapesWorld(image_size=tower.config.image_size, max_shapes=r["max_shapes"], seed=seed)
    steps = lambda n, lr, desc: TrainConfig(steps=n, lr=lr, device=device, progress=progress, desc=desc)

    # The shared frozen LM: LLaVA's text pre-training on the world's sentences, then frozen.
    mlp = build_llava(tower, vocab_size, lm, seed, feature_layer=-1, select="full")
    collator = LlavaCollator(mlp.config.text_config.pad_token_id, image_token_id=mlp.config.image_token_index)
    captions = materialise(caption_records(world, r["scenes"]), tokenizer, processor, "plain", mlp)
    chats_mlp = materialise(exchange_records(world, r["scenes"]), tokenizer, processor, CHAT, mlp)
    texts = strip_images(captions + chats_mlp, mlp.config.image_token_index)
    mlp.language_model.requires_grad_(True)
    histories = {"text": train(mlp.language_model, random_batches(texts, collator, r["batch_size"], seed), text_loss,
                               steps(r["text_steps"], r["text_lr"], "text LM"))}
    result = dict(recipe=r, lm=lm, qformer=QFORMER, text=summary(histories["text"]))

    # MLP arm: the projector alone, stage1 + stage2 steps.
    trainable = freeze_parts(mlp, ("multi_modal_projector",))
    mlp_hist = {"projector": train(mlp, random_batches(chats_mlp, collator, r["batch_size"], seed + 1), llava_loss,
                                   steps(r["stage1_steps"] + r["stage2_steps"], r["lr"], "MLP projector"))}
    result["mlp"] = arm_result(mlp.eval(), mlp_hist, mlp.config.features_per_image, trainable, tokenizer, processor,
                               world, eval_count)

    # Q-Former arm: stage 1 against the tower, then stage 2 into the frozen LM.
    words = ShapesTokenizer(max_length=16)
    stage1 = build_stage1(tower, mlp.config.text_config, words, mlp.config.image_token_index, r, seed)
    word_pairs = pairs(world, lambda t: words(t), processor, r["batch_size"])
    q_hist = {"stage1": train(stage1, word_pairs, stage1_step, steps(r["stage1_steps"], r["stage1_lr"], "Q-Former stage 1"))}
    blip2 = to_captioner(stage1, mlp.language_model)
    trainable = freeze_parts(blip2, STAGE2_PARTS)
    chats = materialise(exchange_records(world, r["scenes"]), tokenizer, processor, CHAT, blip2)
    q_hist["stage2"] = train(blip2, random_batches(chats, collator, r["batch_size"], seed + 1), llava_loss,
                             steps(r["stage2_steps"], r["lr"], "Q-Former stage 2"))
    result["qformer_arm"] = arm_result(blip2.eval(), q_hist, blip2.config.num_query_tokens, trainable, tokenizer,
                                       processor, world, eval_count)
    result["qformer_arm"]["stage1"]["itm_acc_last"] = round(
        sum(q_hist["stage1"].metrics["itm_acc"][-10:]) / 10, 3)
    histories.update({f"mlp {k}": h for k, h in mlp_hist.items()}, **{f"qformer {k}": h for k, h in q_hist.items()})
    if out is not None:
        save_run(histories, result, out)
    return blip2, mlp, histories, result


def table(result):
    """The comparison as markdown rows (README, notebook)."""
    kinds = ("color", "shape", "count", "position", "caption_exact")
    head = ("| bridge | tokens / image | trainable | train s | " + " | ".join(f"{k} seen / held-out" for k in kinds)
            + " |")
    rows = [head, "|" + "---|" * (4 + len(kinds))]
    for name, arm in (("MLP projector (LLaVA)", result["mlp"]), ("Q-Former", result["qformer_arm"])):
        cells = [f"{arm['seen_combos'].get(k, float('nan')):.2f} / {arm['held_out_combos'].get(k, float('nan')):.2f}"
                 for k in kinds]
        rows.append(f"| {name} | {arm['tokens_per_image']} | {arm['trainable_parameters']:,} | "
                    f"{arm['train_seconds']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def save_run(histories, result, out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps({k: h.as_dict() for k, h in histories.items()}) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "table.md").write_text(table(result) + "\n")
    save_loss_curve(histories, out / "loss.png", title="tiny BLIP-2 vs LLaVA's MLP on the shapes world",
                    ylabel="loss")
    return out


def run(args):
    """`python -m minivlm train blip2`: --steps sets stage 2's steps (the MLP arm gets stage 1's on top)."""
    recipe = {"stage2_steps": args.steps} if args.steps else {}
    _, _, _, result = train_blip2(out=args.out, clip_run=getattr(args, "clip_run", None) or "runs/clip",
                                  seed=args.seed, device=args.device, **recipe)
    print(table(result), flush=True)
    return {k: result[k] for k in ("mlp", "qformer_arm")}
