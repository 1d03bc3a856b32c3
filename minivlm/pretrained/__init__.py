"""Tiny models trained by the project's own recipes, shipped inside the package.

Each is a Hugging Face model folder (config.json, model.safetensors in float32, the tokenizer's
files, preprocessor_config.json) with a card (README.md) and its held-out figures (evaluation.json):

    shapes-clip    `train clip`  : zero-shot on colour/shape combinations it never saw
    shapes-blip    `train blip`  : the captioner (BlipForConditionalGeneration)
    shapes-blip-retrieval        : the same run's ITC + ITM heads (BlipForImageTextRetrieval): search, re-ranking
    shapes-llava   `train llava` : answers colour / shape / count / position questions about a scene

    import weights_convert, minivlm.pretrained as pretrained
    model = weights_convert.load_pretrained(pretrained.path("shapes-llava"))
    transformers.LlavaForConditionalGeneration.from_pretrained(pretrained.path("shapes-llava"))  # same numbers

`python -m minivlm ship llava` copies a fresh run (runs/llava) here, measures it on scenes it never
saw (heldout.py) and writes the card (ship.py).
"""
import json
from pathlib import Path

ROOT = Path(__file__).parent
# name -> the recipe (`python -m minivlm train <recipe>`) that makes it; one run may make several
RECIPES = {"shapes-clip": "clip", "shapes-blip": "blip", "shapes-blip-retrieval": "blip", "shapes-llava": "llava"}


def available():
    """The shipped names whose folder is present (a name is shipped once its folder holds weights)."""
    return [n for n in RECIPES if (ROOT / n / "model.safetensors").is_file()]


def path(name):
    """The folder of a shipped model; a clear error for an unknown or missing one."""
    if name not in RECIPES:
        raise ValueError(f"no shipped model {name!r}; shipped: {', '.join(RECIPES)}")
    folder = ROOT / name
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder} holds no model.safetensors; regenerate it with "
                                f"`python -m minivlm train {RECIPES[name]} && python -m minivlm ship {RECIPES[name]}`")
    return folder


def record(name):
    """The figures measured when the model was shipped (evaluation.json): what the tests hold it to."""
    return json.loads((path(name) / "evaluation.json").read_text())
