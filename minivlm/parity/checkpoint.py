"""Parity for a local HF checkpoint folder: the model, and its image processor and tokenizer when
the folder has them.

The model: the reference is transformers' own class for config.json's architecture loaded from the
folder, ours is load_pretrained on the same folder, and the inputs and compared fields are those of
the family's tiny case for that architecture. The image processor: both read
preprocessor_config.json and process the same photo (matplotlib's grace_hopper.jpg) and a small
odd-sized image. The tokenizer: both read the folder's tokenizer files and encode the same texts.
"""
from pathlib import Path

import torch

from . import all_cases
from .harness import ParityCase

TEXTS = ("What is shown in this image?", "A photo of a cat.", "  two  spaces,\nnewline and café 東京 😀",
         "USER: <image>\nDescribe the picture. ASSISTANT:", "")


def checkpoint_case(folder):
    folder = Path(folder)
    from weights_convert.checkpoint import read_config
    from weights_convert.registry import family_for
    config = read_config(folder)
    arch = config["architectures"][0] if config.get("architectures") else None
    family = family_for(config, folder).name
    matching = [c for c in all_cases([family]) if type(c.build_reference()).__name__ == arch]
    if not matching:
        raise ValueError(f"no parity case for {arch} in family {family!r} to take inputs from")
    # The first case's inputs and fields (with labels: the loss too), and a greedy run where any
    # case of the architecture generates, on the same inputs less the labels.
    template = matching[0]
    generating = next((c for c in matching if c.generate is not None), None)

    def generate_inputs(inputs):
        inputs = generating.generate_inputs(inputs) if generating.generate_inputs else inputs
        return {k: v for k, v in inputs.items() if k != "labels"}

    def build():
        import transformers
        return getattr(transformers, arch).from_pretrained(folder)

    return ParityCase(family, f"{folder.name} ({arch})", build, template.make_inputs, template.fields,
                      generating.generate if generating else None, template.valid_positions, folder=str(folder),
                      generate_inputs=generate_inputs if generating else None)


def sample_images():
    """The photo a learner follows, and a small odd-sized RGBA image (every processor must convert it)."""
    import matplotlib.cbook
    import numpy as np
    from PIL import Image
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    photo.load()
    odd = np.random.default_rng(0).integers(0, 256, (37, 101, 4), dtype=np.uint8)
    return [photo, Image.fromarray(odd, "RGBA")]


def check_image_processor(folder):
    """Rows (case, field, max |diff| or "equal"/"differ", ok) for the folder's image processor against
    transformers' (its PIL backend: no torchvision here); [] without preprocessor_config.json.
    Budget (DESIGN.md): within one grey level after normalisation; image_sizes equal."""
    import transformers
    import weights_convert
    folder = Path(folder)
    if not (folder / "preprocessor_config.json").exists():
        return []
    ours, theirs = weights_convert.load_image_processor(folder), transformers.AutoImageProcessor.from_pretrained(folder)
    rows = []
    for name, image in zip(("photo", "odd RGBA"), sample_images()):
        a, b = ours(image), theirs(image, return_tensors="pt")
        pa, pb = torch.as_tensor(a["pixel_values"]).float(), torch.as_tensor(b["pixel_values"]).float()
        grey_level = 1 / 255 / min(getattr(theirs, "image_std", None) or [1.0])
        if pa.shape != pb.shape:
            rows.append((f"{folder.name} processor", f"{name} pixel_values", "differ", False))
            continue
        diff = (pa - pb).abs().max().item()
        rows.append((f"{folder.name} processor", f"{name} pixel_values", diff, diff <= grey_level))
        if "image_sizes" in b:
            equal = torch.equal(torch.as_tensor(a["image_sizes"]), torch.as_tensor(b["image_sizes"]))
            rows.append((f"{folder.name} processor", f"{name} image_sizes", "equal" if equal else "differ", equal))
    return rows


def check_tokenizer(folder, texts=TEXTS):
    """Rows for the folder's tokenizer against transformers' AutoTokenizer: ids of each text and the
    decoded text; [] without tokenizer_config.json. A tokenizer class minivlm does not implement
    raises weights_convert's CheckpointError, naming it."""
    import transformers
    import weights_convert
    folder = Path(folder)
    if not (folder / "tokenizer_config.json").exists():
        return []
    ours, theirs = weights_convert.load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(folder)
    ids_equal = decode_equal = True
    for text in texts:
        a, b = ours.encode(text), theirs(text).input_ids
        ids_equal &= list(a) == list(b)
        decode_equal &= ours.decode(b) == theirs.decode(b)
    return [(f"{folder.name} tokenizer", f"ids of {len(texts)} texts", "equal" if ids_equal else "differ", ids_equal),
            (f"{folder.name} tokenizer", "decode", "equal" if decode_equal else "differ", decode_equal)]


def model_folders(root):
    """Every HF model folder under `root` (itself included): a folder with a config.json naming an
    architecture. Hub caches (models--org--name/snapshots/<hash>/) are found the same way."""
    import json
    found = []
    for config in sorted(Path(root).rglob("config.json")):
        try:
            if json.loads(config.read_text()).get("architectures"):
                found.append(config.parent)
        except (OSError, ValueError):
            continue
    return found
