"""CapFilt (Li et al. 2022, Sec. 3.3): clean a noisy image-text corpus with BLIP's own heads.

* Filt: the ITM head scores each (image, text) pair; a pair whose "match" probability is below a
  threshold is removed. The paper fine-tunes the filter on COCO and drops web texts it finds
  unmatched; here the pre-trained ITM head filters captions we corrupted on purpose, so we can
  count what it removes and what it keeps.
* Cap: the captioner proposes a synthetic caption per image by nucleus sampling (the paper's
  choice: more diverse than beam search, so more new information, but noisier); the filter then
  keeps or drops those too.

    report = capfilt_demo(retriever, tokenizer, world, processor, captioner=captioner)
    report["corrupted"]   # {"n": 100, "removed": 97}     every corruption kind, pooled
    report["clean"]       # {"n": 100, "kept": 95}

`filter_pairs` takes any scorer(images, texts) -> (N,) match probabilities, so its logic can be
checked with a hand-made scorer.
"""
import random

import torch

from .. import generation
from ..data.shapes import COLORS, SHAPES
from ..models.blip import _DecoderStep
from ..data.shapes import EVAL_START
from ..evaluation.retrieval import match_probability

CORRUPTIONS = ("color", "shape", "random")


def corrupt(caption, kind, rng, pool=()):
    """A deliberately wrong caption: "color" / "shape" swaps every colour / shape word for another one,
    "random" takes a different caption from `pool` (a caption of some other image)."""
    words = caption.split()
    if kind in ("color", "shape"):
        vocab = list(COLORS) if kind == "color" else list(SHAPES)
        if not any(w in vocab for w in words):
            raise ValueError(f"cannot swap the {kind} of {caption!r}: it has no {kind} word")
        return " ".join(rng.choice([v for v in vocab if v != w]) if w in vocab else w for w in words)
    if kind == "random":
        others = [c for c in pool if c != caption]
        if not others:
            raise ValueError("a 'random' corruption needs a pool with at least one other caption")
        return rng.choice(others)
    raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")


def filter_pairs(scorer, images, texts, threshold=0.5):
    """Keep the pairs whose match probability is >= threshold. Returns (keep (N,) bool, probs (N,))."""
    if len(images) != len(texts):
        raise ValueError(f"one text per image: {len(images)} images, {len(texts)} texts")
    probs = torch.as_tensor(scorer(images, texts), dtype=torch.float32).reshape(-1)
    if probs.shape[0] != len(texts):
        raise ValueError(f"the scorer gave {probs.shape[0]} probabilities for {len(texts)} pairs")
    return probs >= threshold, probs


def itm_scorer(retriever, tokenizer, processor):
    """scorer(images, texts) with a trained BlipForImageTextRetrieval: P(match) from its ITM head."""
    @torch.no_grad()
    def score(images, texts):
        image_embeds = retriever.encode_image(processor(list(images))["pixel_values"]).last_hidden_state
        return match_probability(retriever, tokenizer, image_embeds, list(texts))
    return score


@torch.no_grad()
def sample_captions(captioner, tokenizer, pixel_values, top_p=0.9, max_new_tokens=10, generator=None):
    """The "Cap" step: one caption per image by nucleus sampling from [DEC]."""
    image_embeds = captioner.encode_image(pixel_values).last_hidden_state  # (B, 1 + N, D)
    bos = torch.full((image_embeds.shape[0], 1), tokenizer.dec_token_id, dtype=torch.long)
    cfg = captioner.config.text
    ids = generation.generate(_DecoderStep(captioner.text_decoder, image_embeds), bos, max_new_tokens=max_new_tokens,
                              do_sample=True, top_p=top_p, eos_token_id=cfg.sep_token_id,
                              pad_token_id=cfg.pad_token_id, generator=generator)
    return [tokenizer.decode(row) for row in ids]


def capfilt_demo(retriever, tokenizer, world, processor, count=200, corrupt_fraction=0.5, threshold=0.5,
                 captioner=None, top_p=0.9, split="train", seed=0, start=EVAL_START + 5 * 10**5):
    """Corrupt `corrupt_fraction` of the captions of `count` unseen scenes (the kinds in turn), filter all
    with the ITM head; with a captioner, also sample a synthetic caption per image and filter those.
    Returns the counts and every pair as a record (for a table or a picture)."""
    rng = random.Random(seed)
    scenes = world.scenes(count, split, start=start)
    truths = [s.caption for s in scenes]
    corrupted = set(rng.sample(range(count), round(corrupt_fraction * count)))
    kinds, texts, turn = [], [], 0
    for i, caption in enumerate(truths):
        kind = "clean"
        if i in corrupted:  # the corruption kinds in turn: equal shares of each
            kind, turn = CORRUPTIONS[turn % len(CORRUPTIONS)], turn + 1
        kinds.append(kind)
        texts.append(caption if kind == "clean" else corrupt(caption, kind, rng, truths))
    images = [s.image for s in scenes]
    scorer = itm_scorer(retriever, tokenizer, processor)
    keep, probs = filter_pairs(scorer, images, texts, threshold)
    report = {"threshold": threshold, "count": count,
              "clean": _tally(kinds, keep, "clean", "kept", True)}
    for kind in CORRUPTIONS:
        report[kind] = _tally(kinds, keep, kind, "removed", False)
    report["corrupted"] = {"n": sum(report[k]["n"] for k in CORRUPTIONS),
                           "removed": sum(report[k]["removed"] for k in CORRUPTIONS)}
    report["records"] = [dict(index=s.index, truth=t, text=x, kind=k, p_match=round(p, 4), kept=bool(kp))
                         for s, t, x, k, p, kp in zip(scenes, truths, texts, kinds, probs.tolist(), keep.tolist())]
    if captioner is not None:
        generator = torch.Generator().manual_seed(seed)
        synthetic = sample_captions(captioner, tokenizer, processor(images)["pixel_values"], top_p, generator=generator)
        keep_s, probs_s = filter_pairs(scorer, images, synthetic, threshold)
        right = [s == t for s, t in zip(synthetic, truths)]
        report["synthetic"] = {"n": count, "right": sum(right), "kept": int(keep_s.sum()),
                               "kept_right": sum(r and k for r, k in zip(right, keep_s.tolist())),
                               "removed_wrong": sum(not r and not k for r, k in zip(right, keep_s.tolist()))}
        report["synthetic_records"] = [dict(truth=t, text=x, right=r, p_match=round(p, 4), kept=bool(k))
                                       for t, x, r, p, k in zip(truths, synthetic, right, probs_s.tolist(),
                                                                keep_s.tolist())]
    return report


def _tally(kinds, keep, kind, verb, kept_value):
    rows = [bool(k) for kd, k in zip(kinds, keep.tolist()) if kd == kind]
    return {"n": len(rows), verb: sum(r == kept_value for r in rows)}
