"""Follow one image through LLaVA-NeXT (or LLaVA-OneVision) with a SigLIP tower, the anyres way.

The seed's example, end to end:

    a 27 x 104 image -> best resolution [384, 384] among the pinpoints -> resized to fit, padded
      -> tiles of 384 (here one) + the whole image squashed to 384: pixel_values [1, 2, 3, 384, 384]
      -> SigLIP tower, every tile: 24 x 24 patches, no [CLS] ('full' keeps the whole grid)
      -> projector (HF's linear-GELU-linear) ... and, beside it, the seed's downsample projector
         (2 x 2 space-to-depth -> LayerNorm -> linear-act-linear: 576 -> 144 tokens a tile)
      -> the tiles' feature grids laid side by side, the rows that only saw padding cut (unpad),
         [OneVision: a grid over anyres_max_N tiles' worth shrunk], an image_newline after each row,
         the base tile's features in front
      -> written at the <image> tokens of the prompt -> decoder -> logits -> greedy tokens

`trace_next` records each stage with its shape; `reference_next` computes the same stages with
transformers (LlavaNextForConditionalGeneration / LlavaOnevisionForConditionalGeneration and their
PIL image processors) and `trace.compare` puts the max |diff| beside each. The downsample projector
has no transformers counterpart (HF's LLaVA-NeXT projects with the MLP), so that stage shows its
shape and token-count factor only. `python -m minivlm trace --model llava_next_siglip` and
notebooks/07b_llava_next_siglip.ipynb are thin layers over these functions.
"""
import json
from pathlib import Path

import torch
from einops import rearrange
from PIL import Image

from .models.projector import PixelShuffleProjector
from .processing.anyres import grid_shape, resize_and_pad, select_best_resolution, unpad_bounds
from .processing.image import load_image
from .trace import Stage, _init_like_hf, _shape, default_image, expand_prompt, full_prompt, token_view
from .trace import tiny_vocabulary, write_tiny_tokenizer

SEED_SIZE = (27, 104)                     # (height, width) of the seed's image
TILE, PATCH = 384, 16                     # SigLIP at 384 px, 24 x 24 patches a tile
PINPOINTS = [[384, 384], [384, 768], [768, 384], [768, 768], [384, 1152], [1152, 384]]


def seed_image():
    """The seed's 27 x 104 picture: matplotlib's photo of Grace Hopper squeezed to that size."""
    return load_image(default_image()).convert("RGB").resize((SEED_SIZE[1], SEED_SIZE[0]), Image.BICUBIC)


def tiny_next_config(vocab_size):
    """A LLaVA-NeXT with a SigLIP-384/16 tower and a Mistral decoder (sliding window 256, shorter than
    the ~750-token prompt), small widths, as an HF config dict."""
    vocab = tiny_vocabulary()
    return {
        "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next",
        "image_token_index": len(vocab), "pad_token_id": len(vocab) + 1, "image_grid_pinpoints": PINPOINTS,
        "vision_feature_layer": -1, "vision_feature_select_strategy": "full", "projector_hidden_act": "gelu",
        "vision_config": {"model_type": "siglip_vision_model", "image_size": TILE, "patch_size": PATCH,
                          "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "vision_use_head": False},
        "text_config": {"model_type": "mistral", "vocab_size": vocab_size, "hidden_size": 64,
                        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "sliding_window": 256, "max_position_embeddings": 2048,
                        "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": len(vocab) + 1,
                        "initializer_range": 0.1},
    }


def write_tiny_next_processor(folder):
    """SigLIP's preprocessing in LLaVA-NeXT's processor: 384 x 384 tiles, mean/std 0.5, no crop."""
    config = {"image_processor_type": "LlavaNextImageProcessor", "do_resize": True,
              "size": {"height": TILE, "width": TILE}, "crop_size": {"height": TILE, "width": TILE},
              "do_center_crop": False, "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255,
              "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_convert_rgb": True,
              "do_pad": True, "image_grid_pinpoints": PINPOINTS}
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(config))


def save_reference(config, folder, seed=0):
    """transformers' model for a config.json dict's architecture, built with the seed and saved in
    `folder` (weights next to the config); None when transformers is not installed."""
    try:
        import transformers
    except ImportError:
        return None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model_class = getattr(transformers, config["architectures"][0])
    torch.manual_seed(seed)
    model = model_class(model_class.config_class(**{k: v for k, v in config.items() if k != "architectures"}))
    model.eval().save_pretrained(folder)
    return model


def load_default_next(folder, seed=0, reference=True):
    """(ours, processor, tokenizer, HF reference or None) for the tiny default, written to `folder`."""
    import weights_convert
    from weights_convert.registry import family_for
    Path(folder).mkdir(parents=True, exist_ok=True)
    config = tiny_next_config(write_tiny_tokenizer(folder))
    write_tiny_next_processor(folder)
    (Path(folder) / "config.json").write_text(json.dumps(config))
    hf = save_reference(config, folder, seed) if reference else None
    if hf is not None:
        ours = weights_convert.load_pretrained(folder)
    else:  # no reference: our own seeded init of the same architecture
        torch.manual_seed(seed)
        ours = family_for(config).build(config)
        _init_like_hf(ours, seed=seed)
        ours.eval()
    return ours, weights_convert.load_image_processor(folder), weights_convert.load_tokenizer(folder), hf


def seed_projector(model, factor=2, seed=0):
    """The seed's downsample projector at this model's widths, seeded (it has no trained weights here)."""
    torch.manual_seed(seed)
    width = model.config.vision_config.hidden_size * model.config.num_feature_layers
    return PixelShuffleProjector(width, model.config.text_config.hidden_size, factor=factor).eval()


@torch.no_grad()
def trace_next(model, processor, tokenizer, image=None, prompt=None, max_new_tokens=8):
    """Run LLaVA-NeXT / OneVision on one image + prompt, recording every stage."""
    cfg = model.config
    raw = load_image(image) if image is not None else seed_image()
    rgb = processor.prepare(raw)
    size = (rgb.height, rgb.width)
    geometry = cfg.geometry()
    n, t = geometry.patches_per_side, geometry.tile_size
    stages = [Stage("image file", rgb, f"(3, {rgb.height}, {rgb.width})", "RGB, (height, width) = " + str(size))]
    best = select_best_resolution(size, geometry.grid_pinpoints)
    rows, cols = grid_shape(size, geometry)
    stages.append(Stage("best resolution", torch.tensor(best), str(list(best)),
                        f"the pinpoint that keeps most of the image's pixels, then wastes least: {rows} x {cols} tiles"))
    canvas = resize_and_pad(rgb, best, processor.resample)
    stages.append(Stage("resize + pad", canvas, f"({best[0]}, {best[1]})", "aspect kept, centred on black"))
    tiles = processor.tiles(rgb)
    stages.append(Stage("tiles", tiles, f"{len(tiles)} x ({t}, {t})", "the whole image squashed to one tile, "
                        "then the canvas cut row by row"))
    batch = processor(rgb)
    pixel_values, image_sizes = batch["pixel_values"].to(model.image_newline.device), batch["image_sizes"]
    stages.append(Stage("pixel_values", pixel_values, _shape(pixel_values), "(images, tiles, 3, t, t), normalised"))

    layer, strategy = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
    tiles_in = pixel_values[0, :len(tiles)].to(next(model.parameters()).dtype)
    hidden = model.vision_tower(tiles_in, output_hidden_states=True).hidden_states
    from .models.llava import select_features
    selected = select_features(hidden, layer, strategy)
    stages.append(Stage("vision tower", selected, _shape(selected),
                        f"hidden_states[{layer}], '{strategy}': {selected.shape[1]} = {n} x {n} patches "
                        f"({'[CLS] dropped' if cfg.vision_config.class_token else 'no [CLS]'})"))
    projected = model.multi_modal_projector(selected)
    stages.append(Stage("projector", projected, _shape(projected), "linear -> GELU -> linear, every patch"))
    if n % 2 == 0:
        downsampled = seed_projector(model)(selected)
        stages.append(Stage("downsample projector (seed)", downsampled, _shape(downsampled),
                            f"2 x 2 space-to-depth -> LayerNorm -> linear-act-linear: {selected.shape[1]} -> "
                            f"{downsampled.shape[1]} tokens a tile (x 1/4); no HF counterpart"))
    grid = rearrange(projected[1:], "(r c) (h w) d -> (r h) (c w) d", r=rows, c=cols, h=n, w=n)
    stages.append(Stage("tile grid", grid, _shape(grid), f"{rows} x {cols} tiles of {n} x {n} features side by side"))
    r0, r1, c0, c1 = unpad_bounds(size, grid.shape[:2])
    unpadded = grid[r0:r1, c0:c1]
    stages.append(Stage("unpadded grid", unpadded, _shape(unpadded), f"rows {r0}:{r1}, cols {c0}:{c1} saw the "
                        "image; the rest saw padding", extra={"bounds": (r0, r1, c0, c1)}))
    resized = model.resize_grid(unpadded, n)
    if resized.shape != unpadded.shape:
        stages.append(Stage("shrunk grid", resized, _shape(resized), "over anyres_max_N tiles' worth: bilinear"))
    features = model.get_image_features(pixel_values, image_sizes)[0]
    stages.append(Stage("image features", features, _shape(features),
                        f"base {n * n} + {resized.shape[0]} rows x ({resized.shape[1]} + newline)"))

    text = expand_prompt(full_prompt(prompt), features.shape[0])
    ids = torch.tensor([tokenizer.encode(text)], device=pixel_values.device)
    stages.append(Stage("prompt tokens", ids, _shape(ids), token_view(ids[0].tolist(), tokenizer, cfg.image_token_index)))
    embeds, _ = model.embed(ids, pixel_values, image_sizes=image_sizes)
    stages.append(Stage("merged embeddings", embeds, _shape(embeds), "image features at the <image> tokens"))
    logits = model(input_ids=ids, pixel_values=pixel_values, image_sizes=image_sizes).logits
    stages.append(Stage("logits", logits, _shape(logits), f"next token: {int(logits[0, -1].argmax())}"))
    generated = model.generate(input_ids=ids, pixel_values=pixel_values, image_sizes=image_sizes,
                               max_new_tokens=max_new_tokens)[0, ids.shape[1]:]
    stages.append(Stage("generated tokens", generated, _shape(generated), repr(tokenizer.decode(generated.tolist()))))
    return stages


@torch.no_grad()
def reference_next(reference, folder, image=None, prompt=None, max_new_tokens=8, input_ids=None):
    """The stages transformers computes, {name: tensor}: its PIL image processor from `folder`, its
    tokenizer on the same expanded prompt, its tower, projector, packed features, embeddings, logits
    and greedy ids."""
    import transformers
    onevision = isinstance(reference, transformers.LlavaOnevisionForConditionalGeneration)
    proc_cls = transformers.LlavaOnevisionImageProcessorPil if onevision else transformers.LlavaNextImageProcessorPil
    raw = load_image(image) if image is not None else seed_image()
    batch = proc_cls.from_pretrained(folder)(raw.convert("RGB"), return_tensors="pt")
    device, dtype = reference.device, reference.dtype
    pv, sizes = batch["pixel_values"].to(device, dtype), batch["image_sizes"].to(device)
    cfg = reference.config
    out = {"pixel_values": pv}
    k = pv.shape[1]
    hidden = reference.model.vision_tower(pv[0], output_hidden_states=True).hidden_states
    layer = cfg.vision_feature_layer
    picked = torch.cat([hidden[i] for i in ([layer] if isinstance(layer, int) else layer)], dim=-1)
    picked = picked[:, 1:] if cfg.vision_feature_select_strategy == "default" else picked
    out["vision tower"], out["projector"] = picked[:k], reference.model.multi_modal_projector(picked[:k])
    out["image features"] = reference.model.get_image_features(pv, sizes).pooler_output[0]
    if input_ids is not None:
        ids = input_ids.to(device)
        text = expand_prompt(full_prompt(prompt), out["image features"].shape[0])
        out["prompt tokens"] = transformers.AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt").input_ids
        body = reference(input_ids=ids, pixel_values=pv, image_sizes=sizes, output_hidden_states=True)
        out["merged embeddings"], out["logits"] = body.hidden_states[0], body.logits
        generated = reference.generate(input_ids=ids, pixel_values=pv, image_sizes=sizes,
                                       max_new_tokens=max_new_tokens, do_sample=False)
        out["generated tokens"] = generated[0, ids.shape[1]:]
    return out


def plot_tiles(stages, path=None):
    """The image, the padded canvas, every tile the tower reads, and the feature grid with the
    unpadded part framed (feature norms): the pictures of the anyres stages."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    by = {s.name: s for s in stages}
    tiles = by["tiles"].value
    fig, axes = plt.subplots(1, 3 + len(tiles), figsize=(3.2 * (3 + len(tiles)), 3.8))
    axes[0].imshow(by["image file"].value)
    axes[0].set_title(f"image {by['image file'].shape}")
    axes[1].imshow(by["resize + pad"].value)
    axes[1].set_title(f"canvas {by['best resolution'].shape}")
    for i, tile in enumerate(tiles):
        axes[2 + i].imshow(tile)
        axes[2 + i].set_title("base tile" if i == 0 else f"tile {i}")
    grid = by["tile grid"].value.float().norm(dim=-1).cpu()
    r0, r1, c0, c1 = by["unpadded grid"].extra["bounds"]
    ax = axes[-1]
    ax.imshow(grid, cmap="viridis")
    ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, edgecolor="red", linewidth=2))
    ax.set_title(f"feature grid {tuple(grid.shape)}\nkept (red): {r1 - r0} x {c1 - c0}")
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


NEXT_ARCHITECTURES = ("LlavaNextForConditionalGeneration", "LlavaOnevisionForConditionalGeneration")


def is_next_checkpoint(folder):
    """True when `folder`'s config.json names a LLaVA-NeXT or OneVision architecture."""
    path = Path(folder or "") / "config.json"
    if not folder or not path.is_file():
        return False
    return (json.loads(path.read_text()).get("architectures") or [None])[0] in NEXT_ARCHITECTURES


def run_next(args, dtype, with_reference, scratch):
    """`python -m minivlm trace` for --model llava_next_siglip or a NeXT / OneVision --checkpoint:
    (stages, reference used?, source description)."""
    from .trace import compare, load_folder
    if args.checkpoint:
        folder = args.checkpoint
        ours, processor, tokenizer, reference = load_folder(folder, dtype, args.device, with_reference)
        source = f"checkpoint {folder}"
    else:
        folder = scratch
        ours, processor, tokenizer, reference = load_default_next(folder, args.seed, reference=with_reference)
        ours = ours.to(args.device, dtype)
        source = f"tiny LLaVA-NeXT + SigLIP-384/16 + Mistral (seed {args.seed}, random weights), the seed's 27x104 image"
    if reference is not None:
        reference = reference.to(args.device, dtype)
    stages = trace_next(ours, processor, tokenizer, args.image, args.prompt, args.max_new_tokens)
    if reference is not None:
        ids = next(s.value for s in stages if s.name == "prompt tokens")
        compare(stages, reference_next(reference, folder, args.image, args.prompt, args.max_new_tokens, ids))
    return stages, reference is not None, source


def run_command(args, dtype, with_reference, tolerance):
    """Print the trace table (and draw the anyres pictures with --plot); exit code 1 when a stage is
    over the budget or the ids differ."""
    import tempfile
    import time

    from .trace import format_stages, worst_diff
    start = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        stages, compared, source = run_next(args, dtype, with_reference, scratch)
    print(f"LLaVA-NeXT trace: {source}, {args.device} {args.dtype}\n")
    print(format_stages(stages, compared))
    code = 0
    if compared:
        worst, ids_equal = worst_diff(stages)
        ok = (worst is None or worst <= tolerance) and ids_equal
        print(f"\nagainst transformers: max |diff| {worst:.1e} (budget {tolerance:g}), token ids "
              f"{'equal' if ids_equal else 'DIFFER'} -> {'ok' if ok else 'FAIL'}")
        code = 0 if ok else 1
    if args.plot:
        plot_tiles(stages, args.plot)
        print(f"figure of the tiles and the unpadded grid: {args.plot}")
    print(f"({time.time() - start:.1f}s)")
    return code
