"""Caption quality on the shapes world: greedy captions of a BLIP captioner against the scenes' own.

Exact match, and per attribute: the colour / shape / position words of the caption, in order, equal
the true ones. The BLIP recipe (train/blip.py) and the shipped shapes-blip's held-out figures
(pretrained/heldout.py) both measure with these.
"""
import torch

from ..data.shapes import COLORS, EVAL_START, SHAPES

WHERE = ("left", "right", "middle")


def _words(caption, vocabulary):
    return [w for w in caption.split() if w in vocabulary]


@torch.no_grad()
def generate_captions(model, tokenizer, pixel_values, max_new_tokens=10):
    """Greedy captions (strings) from a BlipForConditionalGeneration; [DEC] alone is the prompt."""
    ids = model.generate(pixel_values, max_new_tokens=max_new_tokens)  # (B, 1 + n)
    return [tokenizer.decode(row) for row in ids]


def caption_scores(predicted, truths):
    """Exact-match rate and per-attribute accuracy: the colour / shape / position words of the
    caption, in order, equal the true ones."""
    n = len(truths)
    score = {"exact": sum(p == t for p, t in zip(predicted, truths)) / n}
    for name, vocab in (("color", COLORS), ("shape", SHAPES), ("where", WHERE)):
        score[name] = sum(_words(p, vocab) == _words(t, vocab) for p, t in zip(predicted, truths)) / n
    return score


def caption_quality(model, tokenizer, world, processor, split, count=200, start=EVAL_START):
    scenes = world.scenes(count, split, start=start)
    pixel_values = processor([s.image for s in scenes])["pixel_values"]
    predicted = generate_captions(model, tokenizer, pixel_values)
    score = caption_scores(predicted, [s.caption for s in scenes])
    score["examples"] = [(s.caption, p) for s, p in list(zip(scenes, predicted))[:4]]
    return score


# -- retrieval ------------------------------------------------------------------------------------------
