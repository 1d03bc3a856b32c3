"""Parity for a local HF checkpoint folder: the model, and its image processor and tokenizer when
the folder has them.

The model: the reference is transformers' own class for config.json's architecture loaded from the
folder, ours is load_pretrained on the same folder, and the inputs and compared fields are those of
the family's tiny case for that architecture. The two run one after the other (`run_checkpoint_case`):
the reference loads in the compared dtype, runs, leaves only its outputs and is freed before ours
loads, so a 7B checkpoint is checked with one 7B model in memory at a time. The image processor: both read
preprocessor_config.json and process the same photo (matplotlib's grace_hopper.jpg) and a small
odd-sized image. The tokenizer: both read the folder's tokenizer files and encode the same texts.
The whole processor (load_processor / AutoProcessor): the folder's chat template and the photo.
"""
from pathlib import Path

import gc

import torch

from . import all_cases
from .harness import ParityCase, compare_outputs, max_abs_diff, output_fields, relative_diff, to_device

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

    def build(dtype=torch.float32):
        import transformers
        return getattr(transformers, arch).from_pretrained(folder, dtype=dtype).eval()

    return ParityCase(family, f"{folder.name} ({arch})", build, template.make_inputs, template.fields,
                      generating.generate if generating else None, template.valid_positions, folder=str(folder),
                      generate_inputs=generate_inputs if generating else None)


def free(device):
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


@torch.no_grad()
def run_checkpoint_case(case, device="cpu", dtype=torch.float32, seed=0):
    """run_case for a folder on disk, one model at a time: the reference (loaded once, in `dtype`) runs
    and is freed, keeping its outputs on the CPU; then ours loads and runs on the same inputs.
    Returns what run_case returns."""
    import weights_convert
    reference = case.build_reference(dtype=dtype).to(device)
    inputs = case.make_inputs(reference, torch.Generator().manual_seed(seed))  # reads the config only
    inputs = to_device(inputs, device, dtype)
    kept = {k: v.cpu() for k, v in output_fields(reference(**inputs), case.fields).items() if v is not None}
    greedy = case.generate is not None and dtype == torch.float32  # identical ids are asked of fp32 only
    gen_inputs = case.generate_inputs(inputs) if greedy and case.generate_inputs else inputs
    ref_ids = reference.generate(**gen_inputs, do_sample=False, **case.generate).cpu() if greedy else None
    del reference
    free(device)

    ours = weights_convert.load_pretrained(case.folder, dtype=dtype, device=device)
    mine = {k: v.cpu() for k, v in output_fields(ours(**inputs), case.fields).items() if v is not None}
    our_ids = ours.generate(**gen_inputs, **case.generate).cpu() if greedy else None
    del ours
    free(device)
    valid = case.valid_positions(to_device(inputs, "cpu")) if case.valid_positions else None
    measure = max_abs_diff if dtype == torch.float32 else relative_diff
    result = {"diffs": compare_outputs(mine, kept, case.fields, valid, measure), "generate_equal": None}
    if greedy:
        result["generate_equal"] = our_ids.shape == ref_ids.shape and bool((our_ids == ref_ids).all())
    return result


def peak_memory(device="cpu"):
    """'host peak X GB[, GPU peak Y GB]': this process's peak resident memory (Linux VmHWM, else
    ru_maxrss) and torch's peak allocation on a GPU."""
    try:
        with open("/proc/self/status") as f:
            host = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except OSError:
        import resource
        import sys
        host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    text = f"host peak {host / 1e9:.2f} GB"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        text += f", GPU peak {torch.cuda.max_memory_allocated() / 1e9:.2f} GB allocated"
    return text


def weights_size(folder):
    """Bytes of the folder's weight files."""
    from weights_convert.checkpoint import weight_files
    return sum((Path(folder) / f).stat().st_size for f in weight_files(folder))


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


def check_processor(folder):
    """Rows for the whole processor (load_processor against AutoProcessor): the folder's chat template
    over a question about the photo (or the bare placeholder when it has no template), run with the
    photo; every output key compared (ids, masks, sizes and grids equal; pixels within a grey level).
    [] when the folder names no processor class minivlm reads."""
    import transformers
    import weights_convert
    folder = Path(folder)
    try:
        ours = weights_convert.load_processor(folder)
    except weights_convert.CheckpointError:
        return []
    theirs = transformers.AutoProcessor.from_pretrained(folder)
    photo = sample_images()[0]
    if ours.chat_template is not None:
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown here?"}]}]
        text = ours.apply_chat_template(chat, add_generation_prompt=True)
    else:
        text = f"{ours.image_token or ''} What is shown here?"
    a, b = ours(text=text, images=photo, return_tensors="pt"), theirs(text=text, images=photo, return_tensors="pt")
    case = f"{folder.name} whole processor"
    rows = [(case, "output keys", "equal" if sorted(a) == sorted(b) else "differ", sorted(a) == sorted(b))]
    for key in sorted(set(a) & set(b)):
        x, y = torch.as_tensor(a[key]), torch.as_tensor(b[key])
        if key.startswith("pixel_values") and x.shape == y.shape:
            diff = (x.float() - y.float()).abs().max().item()
            rows.append((case, key, diff, diff <= 1 / 255 / min(getattr(theirs.image_processor, "image_std", [1.0]))))
        else:
            equal = x.shape == y.shape and torch.equal(x, y.to(x.dtype))
            rows.append((case, key, "equal" if equal else "differ", equal))
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
