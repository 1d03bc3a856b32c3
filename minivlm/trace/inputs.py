"""What every trace starts from: the image as read and as RGB, and the prompt with its placeholders.

The prompt path: the LLaVA, LLaVA-NeXT and OneVision traces make their inputs with the whole
processor (weights_convert.load_processor), as a user does. Where a trace still writes a prompt's
expansion itself (the other families, and the transformers side of NeXT / OneVision), each image
placeholder becomes one token per feature here, in `expand_placeholders`, the one place that does it.
"""
from pathlib import Path

from ..processing.image import load_image
from .stage import Stage


def default_image():
    """matplotlib's grace_hopper.jpg when matplotlib is installed, else a shapes-world scene (PIL)."""
    try:
        from matplotlib import cbook
        return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:  # matplotlib missing, or an install without sample data
        from ..data.shapes import ShapesWorld
        return ShapesWorld(image_size=96).scene(0).image


def image_name(source, name=None) -> str:
    """How the table names an image: its file name, or `name` for an in-memory one."""
    return name or (Path(source).name if isinstance(source, (str, Path)) else type(source).__name__)


def image_stages(processor, image=None, name=None):
    """Every image trace's first two stages, the file as read and the RGB image: (stages, RGB image)."""
    source = image if image is not None else default_image()
    raw = load_image(source)
    rgb = processor.prepare(raw)
    return [Stage("image file", raw, f"{raw.width}x{raw.height} {raw.mode}", image_name(source, name)),
            Stage("RGB", rgb, f"{rgb.width}x{rgb.height} RGB", "converted" if raw.mode != "RGB" else "already RGB")], rgb


def expand_placeholders(text: str, placeholder: str, counts) -> str:
    """HF's processors: the i-th `placeholder` in the text becomes counts[i] copies of itself (one per
    feature the model writes there), before tokenizing."""
    counts = [counts] if isinstance(counts, int) else list(counts)
    pieces = text.split(placeholder)
    if len(pieces) - 1 != len(counts):
        raise ValueError(f"the prompt holds {len(pieces) - 1} {placeholder} but {len(counts)} images were given")
    return pieces[0] + "".join(placeholder * n + rest for n, rest in zip(counts, pieces[1:]))


def tokenize(tokenizer, texts) -> dict:
    """{"input_ids", "attention_mask"} (B, L) tensors from any of minivlm's tokenizers or HF's:
    several texts padded on the tokenizer's own side."""
    import torch
    try:
        batch = tokenizer(texts, padding=True, return_tensors="pt")
    except TypeError:  # the shapes tokenizers: tensors always, padded to the longest
        batch = tokenizer(texts)
    return {k: torch.as_tensor(batch[k]) for k in ("input_ids", "attention_mask")}


def hf_tokenizer(folder):
    """transformers' tokenizer of the class tokenizer_config.json names. (AutoTokenizer would pick
    Qwen2Tokenizer for any folder whose config.json says model_type qwen2, whatever that file names,
    and the tiny defaults speak a LLaMA-style tokenizer.)"""
    import json
    import transformers
    config = json.loads((Path(folder) / "tokenizer_config.json").read_text())
    cls = getattr(transformers, config.get("tokenizer_class") or "AutoTokenizer", transformers.AutoTokenizer)
    return cls.from_pretrained(folder)


def hf_pixel_values(processor_class: str, folder, image, model):
    """transformers' own image processor (its PIL class `processor_class`, read from `folder`) on the
    sample's image (None: the default one), on the model's device and dtype."""
    import transformers
    raw = load_image(image if image is not None else default_image())
    processor = getattr(transformers, processor_class).from_pretrained(folder)
    return processor(raw.convert("RGB"), return_tensors="pt")["pixel_values"].to(model.device, model.dtype)
