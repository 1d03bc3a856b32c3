"""The CLIP / SigLIP recipe: train a tiny dual encoder from scratch on the shapes world, then test it
zero-shot on colour/shape combinations it never saw ("red triangle" is held out of training; the
model must compose "red" and "triangle").

    result = train_dual_encoder("clip", steps=600, out="runs/clip")
    result["zero_shot"]   # {"held_out": 0.9.., "train": 0.9..}

The run folder is a Hugging Face model folder (config.json, model.safetensors, preprocessor_config.json,
tokenizer.json: the shapes world's word-level vocabulary) plus the loss history, its plot and the
run's card (README.md, evaluation.json):

    weights_convert.load_pretrained("runs/clip")             # strict load, our model
    transformers.CLIPModel.from_pretrained("runs/clip")      # HF's, same numbers
    weights_convert.load_tokenizer("runs/clip")              # its tokenizer (AutoTokenizer reads it too)
    load_vision_tower("runs/clip")                           # the trained ViT alone (for LLaVA)
"""
import json
import math
import time
from pathlib import Path

import torch

from ..data.shapes import ShapesWorld
from ..data.shapes_tokenizer import ShapesTokenizer
from ..models.clip import CLIPConfig, CLIPModel, clip_text_config, clip_vision_config
from ..models.siglip import SiglipConfig, SiglipModel, siglip_text_config, siglip_vision_config
from ..processing.processors import processor_from_config
from ..zero_shot import class_embeddings, classify
from .export import clip_hf_config, save_pretrained, siglip_hf_config
from . import distributed
from .card import write_card
from .loop import TrainConfig, options_from_args, train
from .plot import save_loss_curve

# Prompt templates for zero-shot: the captions' own phrasings (the tokenizer knows no other words).
TEMPLATES = ("a {}", "a {} on the left", "a {} on the right", "a {} in the middle")
EVAL_START = 10**9       # scene indices for evaluation: far from any training index
MAX_CLIP_LOGIT_SCALE = 4.6052  # ln 100: CLIP clips the temperature at 100 (paper, section 2.5)

# A model small enough to learn in a few CPU minutes: 32x32 images in 4x4 patches (64 tokens). With
# 8x8 patches the held-out errors were almost all shape confusions (blue square -> "blue circle").
TINY = dict(image_size=32, patch_size=4, width=64, layers=2, heads=4, mlp=128, projection_dim=64)
# Weight decay 0.2 on matrices: the held-out combinations need "red" and "triangle" as separate
# features, and training longer mostly memorises the seen pairs (held-out accuracy fell from ~0.9 at
# 1000 steps to ~0.78 at 2000 with 8x8 patches). Measurements are noisy from seed to seed (±8 points).
RECIPE = {  # per model: learning rate, weight decay, batch size, steps, image processor
    "clip": dict(lr=3e-3, weight_decay=0.2, batch_size=32, steps=800,
                 processor=dict(image_processor_type="CLIPImageProcessor", do_center_crop=True)),
    # SigLIP at CLIP's lr 3e-3 did not learn (800 steps: seen combinations 50%, held-out 42%). Measured,
    # 8x8 patches, 800 steps: it learns every colour (100%) but sits on a plateau where a text's logit
    # with its image equals its logits with every same-colour image (-1.45 vs -1.48/-2.12: sigmoid ~1/5).
    # Swapping losses shows the cause: SigLIP's towers with the softmax loss leave the plateau (seen
    # 90%, held-out 68%), CLIP's towers with the sigmoid loss stay on it (27% / 36%); so not the
    # last-position pooling or padding. Batches already hold distinct captions; t and b barely move in
    # so few steps (t 10 -> 11); a paper-style b = -10 or a larger t did not help. A smaller lr did:
    # lr 1e-3 -> seen 71-80%. 4x4 patches, seed 0: lr 1e-3 x 1200 steps 92% seen / 64% held-out
    # (2e-3 x 1000: 61% / 56%); seed 1: 95% / 43%. Unseen pairs stay well below CLIP's 93%.
    "siglip": dict(lr=1e-3, weight_decay=0.2, batch_size=32, steps=1200,
                   processor=dict(image_processor_type="SiglipImageProcessor", image_mean=[0.5] * 3,
                                  image_std=[0.5] * 3)),
}


def tiny_config(kind, tokenizer, size=TINY, batch_size=32):
    """Our config for a tiny CLIP or SigLIP whose text side speaks the shapes tokenizer."""
    vision = dict(image_size=size["image_size"], patch_size=size["patch_size"], hidden_size=size["width"],
                  num_layers=size["layers"], num_heads=size["heads"], intermediate_size=size["mlp"])
    text = dict(vocab_size=tokenizer.vocab_size, hidden_size=size["width"],
                num_layers=size.get("text_layers", size["layers"]),
                num_heads=size["heads"], intermediate_size=size["mlp"], max_position_embeddings=tokenizer.max_length,
                pad_token_id=tokenizer.pad_token_id)
    if kind == "clip":
        return CLIPConfig(text=clip_text_config(eos_token_id=tokenizer.eos_token_id, **text),
                          vision=clip_vision_config(**vision), projection_dim=size["projection_dim"])
    if kind == "siglip":
        # The paper starts the bias at b = -10 for its 32k-pair batches: sigmoid(b) ~ the share of
        # positive pairs. With t = 10 and cos <= 1 a positive's logit starts at most t + b = 0. For our
        # batch the same prior is b = logit(1/N) = -ln(N - 1), leaving room to learn from step one.
        return SiglipConfig(text=siglip_text_config(head_size=size["width"], **text),
                            vision=siglip_vision_config(**vision), logit_bias_init_value=-math.log(batch_size - 1))
    raise ValueError(f"kind must be 'clip' or 'siglip', got {kind!r}")


def build(kind, tokenizer, size=TINY, batch_size=32):
    cfg = tiny_config(kind, tokenizer, size, batch_size)
    return CLIPModel(cfg) if kind == "clip" else SiglipModel(cfg)


def processor_config(kind, image_size):
    """preprocessor_config.json for the run: the same dict builds the processor used in training."""
    size = ({"shortest_edge": image_size} if kind == "clip" else {"height": image_size, "width": image_size})
    cfg = dict(RECIPE[kind]["processor"], size=size)
    if kind == "clip":
        cfg["crop_size"] = {"height": image_size, "width": image_size}
    return cfg


def make_processor(kind, image_size):
    cfg = processor_config(kind, image_size)
    return processor_from_config(cfg["image_processor_type"], cfg)


def tokenize_fn(kind, tokenizer):
    """SigLIP's text tower pools the LAST position, so its texts are padded to one fixed length
    (and it takes no attention mask, as SigLIP was trained); CLIP pools at <eos>."""
    if kind == "siglip":
        return lambda texts: {"input_ids": tokenizer(texts, padding="max_length")["input_ids"]}
    return lambda texts: tokenizer(texts)


def pairs(world, tokenize, processor, batch_size, start=0, split="train"):
    """Endless batches {input_ids, (attention_mask), pixel_values} of DISTINCT captions.

    The shapes world has only 18 x 3 training captions; two equal captions in one batch would be
    counted as a negative pair by the contrastive loss while they describe the same thing."""
    index = start
    while True:
        scenes, seen = [], set()
        while len(scenes) < batch_size:
            scene = world.scene(index, split)
            index += 1
            if scene.caption not in seen:
                seen.add(scene.caption)
                scenes.append(scene)
        batch = dict(tokenize([s.caption for s in scenes]))
        batch["pixel_values"] = processor([s.image for s in scenes])["pixel_values"]  # (B, 3, H, W)
        yield batch


def contrastive_step(model, batch):
    """The loss of the model's own forward (losses.clip_loss / siglip_loss), plus how often each text
    picks its own image in the batch (a cheap accuracy to watch)."""
    out = model(**batch, return_loss=True)
    hits = out.logits_per_text.argmax(dim=-1) == torch.arange(len(out.logits_per_text), device=out.logits_per_text.device)
    return out.loss, {"acc": hits.float().mean().item()}


def clamp_temperature(model, step):
    with torch.no_grad():
        model.logit_scale.clamp_(max=MAX_CLIP_LOGIT_SCALE)


@torch.no_grad()
def zero_shot_accuracy(model, world, tokenize, processor, split, count=240, templates=TEMPLATES):
    """Fraction of `count` fresh scenes of `split` whose shape's name ranks first among ALL the
    world's class names (24: chance is 1/24 ~ 4%), with the prompt ensemble of TEMPLATES."""
    was_training = model.training
    model.eval()
    names = world.class_names()
    classes = class_embeddings(model, tokenize, names, templates)  # (24, E)
    scenes = world.scenes(count, split, start=EVAL_START)
    device = next(model.parameters()).device
    pixel_values = processor([s.image for s in scenes])["pixel_values"].to(device)
    predicted = classify(model, pixel_values, classes).argmax(dim=-1).tolist()
    model.train(was_training)
    return sum(names[p] == s.shapes[0].name for p, s in zip(predicted, scenes)) / count


def train_dual_encoder(kind, steps=None, out=None, seed=0, device="cpu", lr=None, batch_size=None,
                       size=TINY, progress=True, eval_count=240, command=None, **train_options):
    """Train a tiny CLIP or SigLIP from scratch; save it to `out` (if given).
    Returns (model, history, result: the figures). train_options go to TrainConfig (weight_decay, ...)."""
    recipe = RECIPE[kind]
    steps = steps or recipe["steps"]
    torch.manual_seed(seed)
    world = ShapesWorld(image_size=size["image_size"], max_shapes=1)
    tokenizer = ShapesTokenizer()
    processor = make_processor(kind, size["image_size"])
    tokenize = tokenize_fn(kind, tokenizer)
    batch_size = batch_size or recipe["batch_size"]
    model = build(kind, tokenizer, size, batch_size)
    batches = pairs(world, tokenize, processor, batch_size, start=seed * 10**6)
    train_options.setdefault("weight_decay", recipe["weight_decay"])
    config = TrainConfig(steps=steps, lr=lr or recipe["lr"], device=device, progress=progress, desc=kind,
                         **train_options)
    start = time.time()
    history = train(model, batches, contrastive_step, config,
                    after_step=clamp_temperature if kind == "clip" else None)
    seconds = time.time() - start
    model.eval()
    result = dict(model=kind, steps=steps, seconds=round(seconds, 1),
                  loss_first=history.mean_loss(first=10), loss_last=history.mean_loss(last=10),
                  zero_shot={name: zero_shot_accuracy(model, world, tokenize, processor, split, eval_count)
                             for name, split in (("held_out", "test"), ("train", "train"))})
    if out is not None and distributed.is_main():  # under torchrun rank 0 writes
        result["out"] = str(save_run(model, kind, tokenizer, history, result, out, size["image_size"], command))
    return model, history, result


def save_run(model, kind, tokenizer, history, result, out, image_size, command=None):
    out = Path(out)
    hf = (clip_hf_config(model.config, tokenizer.bos_token_id) if kind == "clip"
          else siglip_hf_config(model.config, tokenizer.bos_token_id, tokenizer.eos_token_id))
    save_pretrained(model, out, hf)
    (out / "preprocessor_config.json").write_text(json.dumps(processor_config(kind, image_size), indent=2) + "\n")
    (out / "shapes_vocab.json").write_text(json.dumps(tokenizer.vocab) + "\n")
    tokenizer.save_pretrained(out)
    (out / "history.json").write_text(json.dumps(history.as_dict()) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    save_loss_curve(history, out / "loss.png", title=f"tiny {kind} on the shapes world")
    figures = {"steps": result["steps"], "loss, first 10 steps": result["loss_first"],
               "loss, last 10 steps": result["loss_last"],
               "zero-shot accuracy, held-out colour/shape combinations": result["zero_shot"]["held_out"],
               "zero-shot accuracy, trained combinations": result["zero_shot"]["train"]}
    write_card(out, f"tiny {kind.upper() if kind == 'clip' else 'SigLIP'} on the shapes world",
               f"A {kind} dual encoder trained from scratch by minivlm's `train {kind}` on the synthetic shapes "
               f"world (minivlm/data/shapes.py).", command or f"python -m minivlm train {kind}", figures,
               notes=["zero-shot: the scene's \"colour shape\" must rank first among the world's 24 names "
                      "(chance 1/24), on fresh scenes",
                      "tokenizer: the shapes world's word-level vocabulary (minivlm.data.ShapesTokenizer), saved as "
                      "tokenizer.json; weights_convert.load_tokenizer and transformers.AutoTokenizer read it "
                      "(a word outside the vocabulary becomes <pad> there; ShapesTokenizer refuses it)"])
    return out


def load_vision_tower(run_dir="runs/clip"):
    """The trained ViT of a saved run (e.g. LLaVA's vision tower), loaded strictly, in eval()."""
    import weights_convert
    return weights_convert.load_pretrained(run_dir).vision_model


def run(args):
    """`python -m minivlm train clip|siglip`: args.model, steps, out, seed, device."""
    from .settings import command_line
    _, _, result = train_dual_encoder(args.model, steps=args.steps, out=args.out, seed=args.seed, device=args.device,
                                      batch_size=getattr(args, "batch_size", None), command=command_line(args),
                                      **options_from_args(args))
    if not distributed.is_main():
        return result
    print(f"held-out zero-shot accuracy {result['zero_shot']['held_out']:.1%} "
          f"(train combinations {result['zero_shot']['train']:.1%}, chance 1/24) after {result['steps']} steps "
          f"in {result['seconds']:.0f}s; saved to {result['out']}", flush=True)
    return result
