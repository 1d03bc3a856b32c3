"""Follow one multimodal sample through LLaVA, stage by stage, with shapes and the HF reference.

    image file -> RGB -> resize/pad -> pixel_values -> patch embedding -> encoder layers
      -> selected layer -> projector -> prompt tokens with image placeholders -> merged embeddings
      -> decoder -> logits -> generated tokens

`trace_llava` runs minivlm's model and records every stage; `reference_llava` runs transformers'
LlavaForConditionalGeneration + LlavaProcessor on the same image and prompt and records the same
stages; `compare` puts the max |diff| next to each. `python -m minivlm trace` and
notebooks/06_llava.ipynb are thin layers over these functions.

The default needs no download: the tiny LLaVA trained on the shapes world that the package ships
(minivlm/pretrained/shapes-llava, `python -m minivlm train llava`), asked a question about a scene
it never saw (`shapes_sample`), so the trace ends on an answer that can be checked. `load_default`
instead builds an untrained tiny LLaVA from a config with a fixed seed (`--random`). Both speak a tiny
LLaMA-style tokenizer written in code (see `tiny_vocabulary`). Why not a small trained BPE? Training
one needs the `tokenizers` package at run time, and a vocabulary file would be a blob to ship; a
character vocabulary with byte fallback is ~360 lines of data made by a loop, loads through the same
`weights_convert.load_tokenizer` as a real checkpoint, and is read identically by transformers.
It makes every character one token, which is also the easiest sequence to read in a trace.
"""
import json
import string
from dataclasses import dataclass
from pathlib import Path

import torch

from .models.llava import select_features
from .processing.conversation import DEFAULT_IMAGE_TOKEN, prompt as chat_prompt
from .processing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, load_image

DEFAULT_QUESTION = "What is in the picture?"
TEMPLATE = "llava_hf"   # "USER: <image>\n... ASSISTANT:", the llava-hf checkpoints' prompt


@dataclass
class Stage:
    name: str
    value: object            # a tensor, a PIL image, ids, text
    shape: str               # what the table prints
    note: str = ""
    diff: object = None      # max |diff| against the reference (float), or "equal" / "differ"
    extra: dict = None       # what a picture of the stage needs besides the value


# --- the embedded default: image, tokenizer, model -------------------------------------------------

def default_image():
    """matplotlib's grace_hopper.jpg when matplotlib is installed, else a shapes-world scene (PIL)."""
    try:
        from matplotlib import cbook
        return str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:  # matplotlib missing, or an install without sample data
        from .data.shapes import ShapesWorld
        return ShapesWorld(image_size=96).scene(0).image


SHAPES_LLAVA = "shapes-llava"
# The shipped LLaVA's sample: a scene from the evaluation range (indices from 10**9; training used
# 0..1999), "a green square and a blue circle", and its third question, "what color is the circle?".
# The model answers 80-95% of the questions on such scenes right (its card); this one is among them,
# and tests/test_trace.py checks that it still is.
SAMPLE_SCENE, SAMPLE_QUESTION = 10**9 + 1, 2


@dataclass
class Sample:
    image: object        # PIL image
    name: str            # how the trace names the image
    question: str
    answer: str          # the scene's truth


def shapes_sample(index=SAMPLE_SCENE, question=SAMPLE_QUESTION, image_size=32, max_shapes=2):
    """A shapes-world scene of the split the shipped LLaVA trained on (seen colour/shape pairs) but at
    an index it never trained on, with one of its questions and the true answer."""
    from .data.shapes import ShapesWorld
    scene = ShapesWorld(image_size=image_size, max_shapes=max_shapes).scene(index, "train")
    q, a = scene.questions[question]
    return Sample(scene.image, f"shapes-world scene {index} ({scene.caption}), never trained on", q, a)


def load_folder(folder, dtype=torch.float32, device="cpu", reference=True):
    """(ours, processor, tokenizer, reference or None) from a model folder: ours strictly through
    weights_convert, the reference through transformers' own from_pretrained (local files only)."""
    import weights_convert
    ours = weights_convert.load_pretrained(folder, dtype=dtype, device=device)
    ref = None
    if reference:  # the transformers class config.json names (LLaVA, LLaVA-NeXT, OneVision, Qwen2-VL ...)
        import transformers
        from weights_convert.checkpoint import read_config
        arch = read_config(folder)["architectures"][0]
        ref = getattr(transformers, arch).from_pretrained(folder, dtype=dtype).to(device).eval()
    return ours, weights_convert.load_image_processor(folder), weights_convert.load_tokenizer(folder), ref


SPECIALS = ["<unk>", "<s>", "</s>"]
ADDED = ["<image>", "<pad>"]


def tiny_vocabulary():
    """A LLaMA-2-style vocabulary made in code: <unk> <s> </s>, the 256 byte-fallback tokens <0xNN>,
    "▁" (the space) and every printable ASCII character. No merges: one token per character, and
    anything else (a newline, "é") falls back to its UTF-8 bytes. <image> and <pad> come after."""
    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + ["▁"]
    tokens += [c for c in string.printable if c not in string.whitespace]
    return {t: i for i, t in enumerate(tokens)}


def write_tiny_tokenizer(folder, added_tokens=ADDED):
    """tokenizer.json + tokenizer_config.json, the files a Llama 2 checkpoint carries; added_tokens
    (special, after the vocabulary) are the model's placeholders and padding."""
    vocab = tiny_vocabulary()
    added = [{"id": len(vocab) + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(added_tokens)]
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in SPECIALS] + added
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "pad_token": "<pad>", "add_bos_token": True, "add_eos_token": False, "legacy": False,
              "padding_side": "left", "model_max_length": 512,
              "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added}}
    folder = Path(folder)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return len(vocab) + len(added_tokens)


TINY_IMAGE = 64   # pixels: 8 x 8 patches of 8


def write_tiny_processor(folder, size=TINY_IMAGE):
    """LLaVA-1.5's preprocessing at a tiny size: pad to a square with the mean colour, resize the
    shortest edge, centre-crop, CLIP's mean/std."""
    config = {"image_processor_type": "LlavaImageProcessor", "do_pad": True, "do_resize": True,
              "size": {"shortest_edge": size}, "do_center_crop": True, "crop_size": {"height": size, "width": size},
              "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
              "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "do_convert_rgb": True}
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(config))


def tiny_config(vocab_size):
    """The default model as an HF LlavaConfig dict (the form config.json holds)."""
    vocab = tiny_vocabulary()
    return {
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "image_token_index": len(vocab), "pad_token_id": len(vocab) + 1, "image_seq_length": (TINY_IMAGE // 8) ** 2,
        "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
        "vision_config": {"model_type": "clip_vision_model", "image_size": TINY_IMAGE, "patch_size": 8,
                          "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                          "num_attention_heads": 4, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
        "text_config": {"model_type": "llama", "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128,
                        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
                        "pad_token_id": len(vocab) + 1, "initializer_range": 0.1},
    }


def _init_like_hf(model, std=0.02, seed=0):
    """Without transformers: normal(0, std) weights, zero biases, unit norms — HF's init, our seed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def build_default(folder, seed=0, reference=True):
    """Write the tiny default checkpoint folder (config, tokenizer, preprocessor; weights when
    transformers is there to make them and `reference`). Returns the HF model, or None."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    vocab_size = write_tiny_tokenizer(folder)
    write_tiny_processor(folder)
    config = tiny_config(vocab_size)
    (Path(folder) / "config.json").write_text(json.dumps(config))
    if not reference:
        return None
    try:
        import transformers
    except ImportError:
        return None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    reference = transformers.LlavaForConditionalGeneration(transformers.LlavaConfig(**{
        k: v for k, v in config.items() if k != "architectures"})).eval()
    reference.save_pretrained(folder)
    return reference


def load_default(folder, seed=0, reference=True):
    """(ours, processor, tokenizer, reference or None) for the tiny default, built in `folder`.

    With transformers (and `reference`), HF's model is built from the config with the seed, saved, and
    ours loaded from it. Otherwise ours gets the same kind of init from our own seeded generator —
    different random numbers, so its outputs differ from the compared run's."""
    import weights_convert
    from weights_convert.families.llava import llava_config
    from .models.llava import LlavaForConditionalGeneration
    reference = build_default(folder, seed, reference)
    if reference is not None:
        ours = weights_convert.load_pretrained(folder, dtype=torch.float32)
    else:
        torch.manual_seed(seed)
        ours = LlavaForConditionalGeneration(llava_config(json.loads((Path(folder) / "config.json").read_text())))
        _init_like_hf(ours, seed=seed)
        ours.eval()
    return ours, weights_convert.load_image_processor(folder), weights_convert.load_tokenizer(folder), reference


# --- the stages -------------------------------------------------------------------------------------

def full_prompt(text=None):
    """A question -> the llava-hf prompt with the image first; a text holding <image> is used as is."""
    text = text or DEFAULT_QUESTION
    return text if DEFAULT_IMAGE_TOKEN in text else chat_prompt(TEMPLATE, f"{DEFAULT_IMAGE_TOKEN}\n{text}")


def expand_prompt(text, num_image_tokens):
    """HF's LlavaProcessor: every <image> becomes one <image> per feature before tokenizing."""
    return text.replace(DEFAULT_IMAGE_TOKEN, DEFAULT_IMAGE_TOKEN * num_image_tokens)


def _shape(t):
    return str(tuple(t.shape))


def token_view(ids, tokenizer, image_token_id, limit=60):
    """'<s> U S E R : ▁ [<image> x 64] <0x0A> W h a t ...': runs of image tokens folded."""
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids])
    out, i = [], 0
    while i < len(tokens):
        if int(ids[i]) == image_token_id:
            j = i
            while j < len(ids) and int(ids[j]) == image_token_id:
                j += 1
            out.append(f"[{DEFAULT_IMAGE_TOKEN} x {j - i}]")
            i = j
        else:
            out.append(tokens[i])
            i += 1
    text = " ".join(out)
    return text if len(text) <= limit * 4 else text[:limit * 4] + " ..."


def image_stages(processor, image=None, image_name=None):
    """Every trace's first two stages, the file as read and the RGB image: (stages, RGB image).
    `image_name` names an in-memory image in the table (a file is named by its file name)."""
    source = image if image is not None else default_image()
    raw = load_image(source)
    name = image_name or (Path(source).name if isinstance(source, (str, Path)) else type(source).__name__)
    rgb = processor.prepare(raw)
    return [Stage("image file", raw, f"{raw.width}x{raw.height} {raw.mode}", name),
            Stage("RGB", rgb, f"{rgb.width}x{rgb.height} RGB", "converted" if raw.mode != "RGB" else "already RGB")], rgb


@torch.no_grad()
def trace_llava(model, processor, tokenizer, image=None, prompt=None, max_new_tokens=8, image_name=None):
    """Run one image + prompt through minivlm's LLaVA; returns the list of Stages. `image_name` names
    an in-memory image in the table (a file is named by its file name)."""
    cfg, tower = model.config, model.vision_tower
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    stages, rgb = image_stages(processor, image, image_name)
    geo = processor.geometry(rgb)
    size = processor.size
    size = f"shortest edge {size['shortest_edge']}" if "shortest_edge" in size else f"{size['height']}x{size['width']}"
    steps = (["pad to square (mean colour)"] if processor.do_pad else []) + [f"resize {size}"] + \
            ([f"crop {processor.crop_size['height']}x{processor.crop_size['width']}"] if processor.do_center_crop else [])
    stages.append(Stage("resize/pad", geo, f"{geo.width}x{geo.height}", ", ".join(steps)))
    pixel_values = processor(rgb)["pixel_values"].to(device, dtype)  # (1, 3, H, W)
    stages.append(Stage("pixel_values", pixel_values, _shape(pixel_values),
                        f"(x / 255 - mean) / std, range [{pixel_values.min():.2f}, {pixel_values.max():.2f}]"))

    rows, cols = pixel_values.shape[-2] // tower.config.patch_size, pixel_values.shape[-1] // tower.config.patch_size
    embedded = tower.embed(pixel_values)  # (1, 1 + N, D_v)
    stages.append(Stage("patch embedding", embedded, _shape(embedded),
                        f"[CLS] + {rows}x{cols} patches of {tower.config.patch_size}px, + positions"))
    hidden = tower(pixel_values, output_hidden_states=True).hidden_states
    for i, h in enumerate(hidden):
        stages.append(Stage(f"encoder layer {i}", h, _shape(h), "after pre-norm" if i == 0 else ""))
    layer, strategy = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
    selected = select_features(hidden, layer, strategy)
    stages.append(Stage("selected layer", selected, _shape(selected),
                        f"hidden_states[{layer}], " + ("[CLS] dropped" if strategy == "default" else "[CLS] kept")))
    projected = model.multi_modal_projector(selected)
    stages.append(Stage("projector", projected, _shape(projected),
                        f"{selected.shape[-1]} -> {projected.shape[-1]} ({len(model.multi_modal_projector.linears())} "
                        f"linear, {model.multi_modal_projector.act_name})"))

    text = full_prompt(prompt)
    n_image = projected.shape[1]
    ids = torch.tensor([tokenizer.encode(expand_prompt(text, n_image))], device=device)  # (1, L)
    stages.append(Stage("prompt tokens", ids, _shape(ids),
                        f"{int((ids == cfg.image_token_index).sum())} <image> + "
                        f"{int((ids != cfg.image_token_index).sum())} text: {token_view(ids[0], tokenizer, cfg.image_token_index)}",
                        extra={"image_token_id": cfg.image_token_index}))
    merged, _ = model.embed(ids, pixel_values)
    stages.append(Stage("merged embeddings", merged, _shape(merged), "image features written at the <image> positions"))
    body = model.language_model.model(inputs_embeds=merged).last_hidden_state
    stages.append(Stage("decoder", body, _shape(body), f"{cfg.text_config.num_hidden_layers} LLaMA layers + RMSNorm"))
    logits = model.language_model.lm_head(body)
    top = logits[0, -1].float().topk(10).indices.tolist()
    names = tokenizer.convert_ids_to_tokens(top)
    stages.append(Stage("logits", logits, _shape(logits), f"next token {names[0]!r}", extra={"top_tokens": names}))
    generated = model.generate(input_ids=ids, pixel_values=pixel_values, max_new_tokens=max_new_tokens)
    new = generated[0, ids.shape[1]:]
    eos = cfg.text_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or ())
    reply = new.tolist()
    reply = reply[:next((i for i, t in enumerate(reply) if t in eos), len(reply))]  # up to </s>
    answer = tokenizer.decode(reply).strip()
    stages.append(Stage("generated tokens", new, f"{len(new)} new",
                        f"{answer!r} = {' '.join(tokenizer.convert_ids_to_tokens(new.tolist()))}",
                        extra={"answer": answer, "question": prompt or DEFAULT_QUESTION}))
    return stages


@torch.no_grad()
def reference_llava(reference, folder, image=None, prompt=None, max_new_tokens=8):
    """The same stages from transformers' model and processor (read from `folder`): {name: tensor}."""
    import transformers
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    cfg = reference.config
    proc = transformers.LlavaProcessor(image_processor=LlavaImageProcessorPil.from_pretrained(folder), tokenizer=tok,
                                       patch_size=cfg.vision_config.patch_size,
                                       vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                                       num_additional_image_tokens=1)
    raw = load_image(image if image is not None else default_image())
    inputs = proc(images=raw.convert("RGB"), text=full_prompt(prompt), return_tensors="pt")
    device, dtype = reference.device, reference.dtype
    pv, ids = inputs["pixel_values"].to(device, dtype), inputs["input_ids"].to(device)
    out = {"pixel_values": pv, "prompt tokens": ids}
    vision = reference.model.vision_tower
    out["patch embedding"] = vision.embeddings(pv)
    hidden = vision(pv, output_hidden_states=True).hidden_states
    out.update({f"encoder layer {i}": h for i, h in enumerate(hidden)})
    layer = cfg.vision_feature_layer
    picked = [hidden[k] for k in ([layer] if isinstance(layer, int) else layer)]
    if cfg.vision_feature_select_strategy == "default":
        picked = [h[:, 1:] for h in picked]
    out["selected layer"] = torch.cat(picked, dim=-1)
    out["projector"] = torch.stack(list(reference.model.get_image_features(pv).pooler_output))
    captured = {}

    def capture(module, args, kwargs):  # the decoder's input: HF's merged embeddings
        captured["embeds"] = kwargs["inputs_embeds"]

    hook = reference.model.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        body = reference.model(input_ids=ids, pixel_values=pv)
    finally:
        hook.remove()
    out["merged embeddings"] = captured["embeds"]
    out["decoder"] = body.last_hidden_state
    out["logits"] = reference(input_ids=ids, pixel_values=pv).logits
    generated = reference.generate(input_ids=ids, pixel_values=pv, max_new_tokens=max_new_tokens, do_sample=False)
    out["generated tokens"] = generated[0, ids.shape[1]:]
    return out


def compare(stages, reference):
    """Fill each stage's diff from the reference's tensor of the same name (ids: equal / differ)."""
    for stage in stages:
        ref = reference.get(stage.name)
        if ref is None:
            continue
        mine = stage.value
        if stage.name in ("prompt tokens", "generated tokens"):
            stage.diff = "equal" if mine.shape == ref.shape and bool((mine.cpu() == ref.cpu()).all()) else "differ"
        elif mine.shape != ref.shape:
            stage.diff = f"shape {tuple(ref.shape)}"
        else:
            stage.diff = (mine.float().cpu() - ref.float().cpu()).abs().max().item()
    return stages


def format_stages(stages, with_reference):
    head = ["#", "stage", "shape", "vs HF (max |diff|)" if with_reference else "", "what happened"]
    rows = []
    for i, s in enumerate(stages, 1):
        diff = "" if s.diff is None else s.diff if isinstance(s.diff, str) else f"{s.diff:.1e}"
        rows.append([str(i), s.name, s.shape, diff, s.note])
    widths = [max(len(r[k]) for r in rows + [head]) for k in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in [head] + rows]
    return "\n".join(line.rstrip() for line in lines)


def worst_diff(stages):
    """The largest float diff and whether every id comparison was equal."""
    floats = [s.diff for s in stages if isinstance(s.diff, float)]
    ids_equal = all(s.diff == "equal" for s in stages if s.name in ("prompt tokens", "generated tokens"))
    return (max(floats) if floats else None), ids_equal


def plot_stages(stages, path=None):
    """A figure of the stages: the image, what the model sees, the patch grid, feature norms per
    layer and per patch, the token sequence and the next-token distribution."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by = {s.name: s for s in stages}
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    ax = axes.ravel()
    ax[0].imshow(by["RGB"].value, interpolation="nearest")  # a 32-pixel scene stays sharp
    ax[0].set_title(f"1. image file ({by['image file'].shape})")
    geo = by["resize/pad"].value
    ax[1].imshow(geo, interpolation="nearest")
    pv = by["pixel_values"].value
    h, w = pv.shape[-2:]
    n = by["patch embedding"].value.shape[1] - 1
    side = int(round(n ** 0.5))
    for k in range(1, side):
        ax[1].axhline(k * h / side - 0.5, color="black", alpha=0.35, lw=0.6)  # seen on photos and on white
        ax[1].axvline(k * w / side - 0.5, color="black", alpha=0.35, lw=0.6)
    ax[1].set_title(f"2. resize/pad -> {h}x{w}, {side}x{side} patches")
    layers = [s for s in stages if s.name.startswith("encoder layer")]
    norms = torch.stack([s.value[0].float().norm(dim=-1).cpu() for s in layers])  # (L+1, 1+N)
    ax[2].plot(norms[:, 1:].mean(1).numpy(), marker="o", label="patches (mean)")
    ax[2].plot(norms[:, 0].numpy(), marker="s", label="[CLS]")
    ax[2].set_title("3. feature norm per encoder layer")
    ax[2].set_xlabel("hidden_states index")
    ax[2].legend()
    sel = by["selected layer"].value[0].float().norm(dim=-1).cpu()
    grid = sel[-side * side:].reshape(side, side)
    im = ax[3].imshow(grid.numpy(), cmap="viridis")
    fig.colorbar(im, ax=ax[3], fraction=0.046)
    ax[3].set_title("4. selected layer, norm per patch")
    proj = by["projector"].value[0].float().norm(dim=-1).cpu()[-side * side:].reshape(side, side)
    im = ax[4].imshow(proj.numpy(), cmap="magma")
    fig.colorbar(im, ax=ax[4], fraction=0.046)
    ax[4].set_title("5. projector, norm per image token")
    merged = by["merged embeddings"].value[0].float().norm(dim=-1).cpu()
    ids = by["prompt tokens"].value[0].cpu()
    is_image = (ids == by["prompt tokens"].extra["image_token_id"]).tolist()
    ax[5].bar(range(len(merged)), merged.numpy(), color=["tab:orange" if i else "tab:blue" for i in is_image])
    ax[5].set_title("6. merged embeddings, norm per position\n(orange: image features, blue: text)")
    probs = by["logits"].value[0, -1].float().softmax(-1).cpu()
    top = probs.topk(10)
    ax[6].barh(range(10)[::-1], top.values.numpy())
    ax[6].set_yticks(range(10)[::-1])
    ax[6].set_yticklabels(by["logits"].extra["top_tokens"])
    ax[6].set_title("7. next-token probabilities (top 10)")
    ax[7].axis("off")
    ax[7].text(0, 1, "8. prompt tokens:\n" + _wrap(by["prompt tokens"].note, 48) + "\n\ngenerated:\n" +
               _wrap(by["generated tokens"].note, 48), va="top", family="monospace", fontsize=8)
    qa = by["generated tokens"].extra
    fig.suptitle(f"question: {qa['question']!r}    answer: {qa['answer']!r}", fontsize=14)
    for a in (ax[0], ax[1], ax[3], ax[4]):
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=90)
        plt.close(fig)
    return fig


def _wrap(text, width):
    return "\n".join(text[i:i + width] for i in range(0, min(len(text), width * 14), width))
