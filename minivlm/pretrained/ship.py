"""Ship a trained run: copy its Hugging Face folder into minivlm/pretrained/<name>/, measure it on
scenes it never saw (heldout.py) and write its card (README.md) and figures (evaluation.json).

    python -m minivlm train llava --threads 1      # -> runs/llava
    python -m minivlm ship llava                   # -> minivlm/pretrained/shapes-llava/

Only what a user needs is copied: config.json, model.safetensors, the tokenizer's files,
preprocessor_config.json, plus the run's own figures (metrics.json) and loss curve (loss.png).
"""
import json
import shutil
from pathlib import Path

from . import RECIPES, ROOT
from .heldout import margin, measure

# shipped name -> (its HF folder inside runs/<recipe>, files copied from it, files copied from the run itself)
HF_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
LAYOUT = {
    "shapes-clip": ("", HF_FILES, ("shapes_vocab.json",)),
    "shapes-blip": ("captioner", HF_FILES, ("shapes_vocab.json",)),
    "shapes-blip-retrieval": ("retrieval", HF_FILES, ("shapes_vocab.json",)),
    "shapes-llava": ("", HF_FILES + ("tokenizer.json", "tokenizer_config.json"), ()),
}
ABOUT = {
    "shapes-clip": ("CLIPModel", "a tiny CLIP (ViT 2 layers x 64 wide, 4x4-pixel patches of a 32x32 image; text "
                    "transformer 2 x 64 over the shapes world's 38 words) trained contrastively from scratch",
                    "zero_shot: the scene's \"colour shape\" ranks first among all 24 names (chance 1/24), "
                    "with the recipe's prompt ensemble", "240"),
    "shapes-blip": ("BlipForConditionalGeneration", "the captioner of a tiny BLIP (ViT 2 x 64, 8x8-pixel patches "
                    "of a 32x32 image; BERT-style text 2 x 64) pre-trained from scratch with ITC + ITM + LM",
                    "greedy caption: exact = the whole caption right; color / shape / where = that word right", "200"),
    "shapes-blip-retrieval": ("BlipForImageTextRetrieval", "the retrieval heads of the same tiny BLIP run as "
                              "shapes-blip (its ViT and BERT-style text encoder, the ITC projections and the ITM "
                              "head); minivlm.retrieval searches with its ITC features and re-ranks with its ITM head",
                              "t2i / i2t: R@1 text->image and image->text among every distinct caption of the split, "
                              "by ITC cosine, then (_itm) after the ITM head re-ranks ITC's top 8; itm_pairs: each "
                              "scene with its caption scores P(match) > 0.5 and with that caption one word off "
                              "(colour or shape) < 0.5", "54 / 18 distinct captions (R@1) and 200 (2 x 200 pairs)"),
    "shapes-llava": ("LlavaForConditionalGeneration", "a tiny LLaVA: the shapes-clip recipe's vision tower "
                     "(frozen), a 2-layer projector and a 2-layer Llama (64 wide, GQA 4/2) over a character "
                     "vocabulary, trained in LLaVA's two stages",
                     "each question of a scene of one or two shapes, asked alone; the greedy reply must equal the answer",
                     "40"),
}


def ship(recipe, run=None, root=ROOT, seed=0):
    """Ship every model the run of `recipe` makes (`train blip`: shapes-blip and shapes-blip-retrieval);
    returns their folders."""
    return [ship_one(name, run, root, seed) for name, r in RECIPES.items() if r == recipe]


# The shapes chat template the LLaVA recipe trains with (train/llava.py CHAT: "USER: <image>\n... ASSISTANT:",
# replies end with </s>), as the jinja2 chat template a HF folder carries, so load_processor(folder)
# .apply_chat_template renders what the model was trained on (tests/test_model_card.py proves them equal).
SHAPES_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}{{ ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT:' }}{% generation %}{{ ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{{ '</s>' }}{% endgeneration %}"
    "{% else %}{{ raise_exception('the shapes chat template knows user and assistant turns, got ' + message['role']) }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


def write_llava_processor_files(out, config):
    """processor_config.json (LlavaProcessor: the tower's patch size, its feature selection, +1 for
    CLIP's [CLS]) and chat_template.jinja: what load_processor / AutoProcessor read."""
    vision = config["vision_config"]
    processor = {"processor_class": "LlavaProcessor", "image_token": "<image>", "patch_size": vision["patch_size"],
                 "vision_feature_select_strategy": config.get("vision_feature_select_strategy", "default"),
                 "num_additional_image_tokens": 1}  # the CLIP tower's [CLS]
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(SHAPES_CHAT_TEMPLATE)


def ship_one(name, run=None, root=ROOT, seed=0):
    """Copy its part of runs/<recipe> (or `run`) into root/<name>, measure it, write evaluation.json and README.md."""
    recipe = RECIPES[name]
    run = Path(run or Path("runs") / recipe)
    sub, model_files, run_files = LAYOUT[name]
    missing = [str(run / sub / f) for f in model_files if not (run / sub / f).is_file()]
    missing += [str(run / f) for f in run_files + ("metrics.json",) if not (run / f).is_file()]
    if missing:
        raise FileNotFoundError(f"the run is incomplete, missing {missing}; train it first: "
                                f"python -m minivlm train {recipe}")
    out = Path(root) / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in model_files:
        shutil.copy(run / sub / f, out / f)
    for f in run_files + ("metrics.json", "loss.png", "tokenizer.json", "tokenizer_config.json"):
        if (run / f).is_file():
            shutil.copy(run / f, out / f)
    config = json.loads((out / "config.json").read_text())
    config["dtype"] = "float32"   # what the weights are; a loader's dtype="auto" reads it
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if name == "shapes-llava":
        write_llava_processor_files(out, config)
    figures = measure(name, out)
    evaluation = {"recipe": f"python -m minivlm train {recipe} --seed {seed} --threads 1", "seed": seed,
                  "counts": figures}
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    (out / "README.md").write_text(card(name, recipe, seed, figures, out))
    return out


def _table(figures):
    metrics = list(next(iter(figures.values())))
    rows = ["| scenes | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    labels = {"seen": "unseen images, seen combinations", "held_out": "held-out colour x shape combinations"}
    for split, counts in figures.items():
        cells = [f"{c['correct']}/{c['total']} ({c['correct'] / c['total']:.0%})" for c in counts.values()]
        rows.append(f"| {labels[split]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def card(name, recipe, seed, figures, folder):
    arch, what, metric, scenes = ABOUT[name]
    files = sorted(p.name for p in Path(folder).iterdir() if p.name != "README.md")
    size = sum((Path(folder) / f).stat().st_size for f in files)
    return f"""# {name}

{what}, on the synthetic shapes world (minivlm/data/shapes.py). `{arch}` in float32, {size / 1e6:.2f} MB
({", ".join(files)}).

    import weights_convert, minivlm.pretrained as pretrained
    model = weights_convert.load_pretrained(pretrained.path("{name}"), dtype="float32")
    # transformers.{arch}.from_pretrained(pretrained.path("{name}")) gives the same numbers

## How it was made

    python -m minivlm train {recipe} --seed {seed} --threads 1{"   # uses runs/clip (trained first if missing)" if recipe == "llava" else ""}
    python -m minivlm ship {recipe}

The recipe and its measured design choices: minivlm/train/{dict(clip="dual_encoder", blip="blip", llava="llava")[recipe]}.py.
The run's own figures (training time, losses, its larger evaluation) are in metrics.json, its loss
curve in loss.png.

## Measured on scenes it never saw

{metric}. Scenes {scenes} per row from index 10**9
of ShapesWorld(seed 0), far from every training index; one CPU thread.

{_table(figures)}

tests/test_pretrained.py re-measures these counts and fails when one drops by more than
{margin(100)} answer per 100 asked (near-tied argmaxes may flip on another CPU's float kernels).
"""
