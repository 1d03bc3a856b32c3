"""The shipped models measured on scenes they never saw: one fixed evaluation set per model.

Scenes come from scene indices EVAL_START = 10**9 on (training draws indices below ~10**6 + a few
10**4), with the world's seed 0, so the set is the same on every machine. Each figure is a count of
correct answers out of a total: ship.py records it in evaluation.json, and the tests re-measure it
and fail on a drop (tests/test_pretrained.py).

    split "train": unseen images of colour/shape combinations seen in training
    split "test":  combinations held out of training (red triangle, green circle, ...)
"""
import json
from pathlib import Path

import torch

from ..data.shapes import EVAL_START, ShapesWorld

SPLITS = (("seen", "train"), ("held_out", "test"))


def _load(folder):
    import weights_convert
    return weights_convert.load_pretrained(folder, dtype=torch.float32), weights_convert.load_image_processor(folder)


def _shapes_tokenizer(folder, tokenizer):
    """The shapes tokenizer, checked against the vocabulary the folder was trained with."""
    stored = json.loads((folder / "shapes_vocab.json").read_text())
    if stored[:len(tokenizer.vocab)] != tokenizer.vocab:
        raise ValueError(f"{folder}/shapes_vocab.json differs from minivlm's shapes vocabulary: the model was "
                         "trained with other ids; regenerate it (see its README.md)")
    return tokenizer


def clip_counts(folder, count=240):
    """Zero-shot: the scene's "colour shape" ranks first among all 24 names (chance 1/24)."""
    from ..data.shapes_tokenizer import ShapesTokenizer
    from ..evaluation.zero_shot import tokenize_fn, zero_shot_accuracy
    model, processor = _load(folder)
    tokenize = tokenize_fn("clip", _shapes_tokenizer(folder, ShapesTokenizer()))
    world = ShapesWorld(image_size=model.config.vision.image_size, max_shapes=1)
    return {name: {"zero_shot": {"correct": round(zero_shot_accuracy(model, world, tokenize, processor, split, count)
                                                  * count), "total": count}}
            for name, split in SPLITS}


def blip_counts(folder, count=200):
    """Greedy captions: exact match, and each attribute word (colour, shape, position) right."""
    from ..data.shapes_tokenizer import BlipShapesTokenizer
    from ..evaluation.captions import caption_quality
    model, processor = _load(folder)
    tokenizer = _shapes_tokenizer(folder, BlipShapesTokenizer())
    world = ShapesWorld(image_size=model.config.vision.image_size, max_shapes=1)
    out = {}
    for name, split in SPLITS:
        score = caption_quality(model, tokenizer, world, processor, split, count)
        out[name] = {k: {"correct": round(score[k] * count), "total": count} for k in ("exact", "color", "shape", "where")}
    return out


def llava_counts(folder, count=40):
    """Every question of `count` scenes of one or two shapes, asked alone, greedy, exact answer; by type."""
    import weights_convert
    from ..evaluation.answers import answer, chat_prompt, question_type
    model, processor = _load(folder)
    tokenizer = weights_convert.load_tokenizer(folder)
    recipe = json.loads((Path(folder) / "metrics.json").read_text())["recipe"]  # the scenes it trained on
    world = ShapesWorld(image_size=model.config.vision_config.image_size, max_shapes=recipe["max_shapes"])
    out = {}
    for name, split in SPLITS:
        asked = [(s, q, a) for s in world.scenes(count, split, start=EVAL_START) for q, a in s.questions]
        replies = answer(model, tokenizer, processor, [s.image for s, _, _ in asked],
                         [chat_prompt(q) for _, q, _ in asked])
        by_type = {}
        for (_, q, a), reply in zip(asked, replies):
            hits = by_type.setdefault(question_type(q), {"correct": 0, "total": 0})
            hits["correct"] += int(reply == a)
            hits["total"] += 1
        out[name] = by_type
    return out


def _one_word_off(scene, i):
    """A hard negative: the scene's caption with its colour (even i) or its shape (odd i) changed."""
    from ..data.shapes import COLORS, SHAPES
    shape = scene.shapes[0]
    words = list(COLORS) if i % 2 == 0 else list(SHAPES)
    old = shape.color if i % 2 == 0 else shape.kind
    new = words[(words.index(old) + 1) % len(words)]
    return scene.caption.replace(f" {old} ", f" {new} ", 1)   # "a red circle on the left": both mid-caption


@torch.no_grad()
def blip_retrieval_counts(folder, count=200):
    """R@1 text->image and image->text among every distinct caption of the split (54 seen, all 18
    held-out) by ITC cosine, and after the ITM head re-ranks ITC's top 8 (train/blip.py's
    retrieval_recall); and ITM as a classifier: each of `count` scenes with its caption must score
    P(match) > 0.5, and with that caption one word off (colour or shape) < 0.5 (2 * count pairs)."""
    from ..data.shapes_tokenizer import BlipShapesTokenizer
    from ..evaluation.retrieval import match_probability, retrieval_recall
    model, processor = _load(folder)
    tokenizer = _shapes_tokenizer(folder, BlipShapesTokenizer())
    world = ShapesWorld(image_size=model.config.vision.image_size, max_shapes=1)
    out = {}
    for (name, split), queries in zip(SPLITS, (54, 18)):
        recall = retrieval_recall(model, tokenizer, world, processor, split, queries, k=8)
        out[name] = {k: {"correct": round(recall[k] * queries), "total": queries}
                     for k in ("t2i_itc", "i2t_itc", "t2i_itm", "i2t_itm")}
        scenes = world.scenes(count, split, start=EVAL_START)
        images = model.encode_image(processor([s.image for s in scenes])["pixel_values"]).last_hidden_state
        match = match_probability(model, tokenizer, images, [s.caption for s in scenes])
        off = match_probability(model, tokenizer, images, [_one_word_off(s, i) for i, s in enumerate(scenes)])
        out[name]["itm_pairs"] = {"correct": int((match > 0.5).sum() + (off < 0.5).sum()), "total": 2 * count}
    return out


COUNTS = {"shapes-clip": clip_counts, "shapes-blip": blip_counts, "shapes-blip-retrieval": blip_retrieval_counts,
          "shapes-llava": llava_counts}


def measure(name, folder):
    """{split: {metric: {"correct", "total"}}} for the shipped model `name` in `folder` (one thread:
    the same float sums, so the same counts, on every run of one machine)."""
    from pathlib import Path
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return COUNTS[name](Path(folder))
    finally:
        torch.set_num_threads(threads)


def margin(total):
    """Answers a re-measurement may lose without failing: 1 per 100 asked (at least 1). On another
    CPU the float kernels differ in the last bits, which can flip a near-tied argmax; a real
    regression (a wrong weight, a broken stage) costs tens of points, far beyond it."""
    return max(1, total // 100)
