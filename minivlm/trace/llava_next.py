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
PIL image processors) and `stage.compare` puts the max |diff| beside each. Variants of the tiny
default: "siglip" (the seed's example above), "clip" (LLaVA-1.6's CLIP tower: [CLS] dropped, the
second-to-last layer) and "onevision" (LLaVA-OneVision: SigLIP, Qwen2, the anyres_max shrink). The downsample projector
has no transformers counterpart (HF's LLaVA-NeXT projects with the MLP), so that stage shows its
shape and token-count factor only. `python -m minivlm trace --model llava_next_siglip` (llava_next,
llava_onevision) and notebooks/07b_llava_next_siglip.ipynb are thin layers over these functions.
"""
import json
from pathlib import Path

import torch
from einops import rearrange
from PIL import Image

from ..models.llava import select_features
from ..models.projector import PixelShuffleProjector
from ..processing.anyres import grid_shape, resize_and_pad, select_best_resolution, unpad_bounds
from ..processing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, load_image
from ..processing.tiny_tokenizer import added_token_ids, write_tiny_tokenizer
from .families import Sample
from .inputs import default_image
from .llava import expand_prompt, full_prompt
from .stage import Stage, shape, token_view

TITLE = {"clip": "LLaVA-NeXT", "siglip": "LLaVA-NeXT", "onevision": "LLaVA-OneVision"}
SHIPPED = {}
SEED_SIZE = (27, 104)                     # (height, width) of the seed's image
TILE, PATCH = 384, 16                     # SigLIP at 384 px, 24 x 24 patches a tile
PINPOINTS = [[384, 384], [384, 768], [768, 384], [768, 768], [384, 1152], [1152, 384]]


def seed_image():
    """The seed's 27 x 104 picture: matplotlib's photo of Grace Hopper squeezed to that size."""
    return load_image(default_image()).convert("RGB").resize((SEED_SIZE[1], SEED_SIZE[0]), Image.BICUBIC)


ADDED = ["<image>", "<video>", "<pad>"]
# variant -> (architecture, vision config, feature layer, strategy, tile, pinpoints, text config)
CLIP_TILE, ONEVISION_TILE = 64, 48


def _pinpoints(tile, shapes=((1, 1), (1, 2), (2, 1), (2, 2), (1, 3), (3, 1))):
    return [[tile * r, tile * c] for r, c in shapes]


def tiny_next_config(vocab_size, variant="siglip"):
    """A tiny LLaVA-NeXT as an HF config dict. "siglip": a SigLIP-384/16 tower and a Mistral decoder
    (sliding window 256, shorter than the ~750-token prompt); "clip": a CLIP-64/8 tower read at its
    second-to-last layer, [CLS] dropped (LLaVA-1.6), LLaMA; "onevision": LLaVA-OneVision, a SigLIP-48/8
    tower, Qwen2, the grid shrunk over 4 tiles' worth (anyres_max_4)."""
    ids = added_token_ids(ADDED)
    text = {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": ids["<pad>"],
            "initializer_range": 0.1}
    siglip = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "vision_use_head": False}
    top = {"image_token_index": ids["<image>"], "pad_token_id": ids["<pad>"], "projector_hidden_act": "gelu"}
    if variant == "clip":
        return {"architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next", **top,
                "image_grid_pinpoints": _pinpoints(CLIP_TILE), "vision_feature_layer": -2,
                "vision_feature_select_strategy": "default",
                "vision_config": {"model_type": "clip_vision_model", "image_size": CLIP_TILE, "patch_size": 8,
                                  "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
                                  "num_attention_heads": 2, "hidden_act": "quick_gelu"},
                "text_config": {"model_type": "llama", **text}}
    if variant == "onevision":
        return {"architectures": ["LlavaOnevisionForConditionalGeneration"], "model_type": "llava_onevision", **top,
                "video_token_index": ids["<video>"], "image_grid_pinpoints": _pinpoints(ONEVISION_TILE),
                "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
                "vision_aspect_ratio": "anyres_max_4",
                "vision_config": {**siglip, "image_size": ONEVISION_TILE, "patch_size": 8},
                "text_config": {"model_type": "qwen2", **text}}
    return {"architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next", **top,
            "image_grid_pinpoints": PINPOINTS, "vision_feature_layer": -1, "vision_feature_select_strategy": "full",
            "vision_config": {**siglip, "image_size": TILE, "patch_size": PATCH},
            "text_config": {"model_type": "mistral", **text, "sliding_window": 256}}


def write_tiny_next_processor(folder, config):
    """LLaVA-NeXT's (or OneVision's) image processor for the config's tower: SigLIP's mean/std 0.5 and
    square tiles, or CLIP's mean/std, shortest edge and crop."""
    tile = config["vision_config"]["image_size"]
    clip = config["vision_config"]["model_type"] == "clip_vision_model"
    onevision = config["model_type"] == "llava_onevision"
    processor = {"image_processor_type": "LlavaOnevisionImageProcessor" if onevision else "LlavaNextImageProcessor",
                 "do_resize": True, "size": {"shortest_edge": tile} if clip else {"height": tile, "width": tile},
                 "crop_size": {"height": tile, "width": tile}, "do_center_crop": clip, "resample": 3,
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": list(OPENAI_CLIP_MEAN) if clip else [0.5] * 3,
                 "image_std": list(OPENAI_CLIP_STD) if clip else [0.5] * 3, "do_convert_rgb": True,
                 "do_pad": True, "image_grid_pinpoints": config["image_grid_pinpoints"]}
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor))


def write_tiny(folder, variant="siglip") -> dict:
    config = tiny_next_config(write_tiny_tokenizer(folder, ADDED), variant)
    write_tiny_next_processor(folder, config)
    (Path(folder) / "processor_config.json").write_text(json.dumps(processor_config(config)))
    if variant == "onevision":  # videos: every frame one tile, the tower's size
        tile = config["vision_config"]["image_size"]
        video = {"video_processor_type": "LlavaOnevisionVideoProcessor", "size": {"height": tile, "width": tile}}
        (Path(folder) / "video_preprocessor_config.json").write_text(json.dumps(video))
    return config


def processor_config(config: dict) -> dict:
    """processor_config.json for a LLaVA-NeXT / OneVision config.json: what the processor counts an
    image's tokens with (HF's LlavaNextProcessor / LlavaOnevisionProcessor fields)."""
    vision = config["vision_config"]
    if config["model_type"] == "llava_onevision":
        return {"processor_class": "LlavaOnevisionProcessor", "image_token": "<image>", "video_token": "<video>",
                "num_image_tokens": (vision["image_size"] // vision["patch_size"]) ** 2,
                "vision_feature_select_strategy": config["vision_feature_select_strategy"],
                "vision_aspect_ratio": config.get("vision_aspect_ratio", "anyres_max_9")}
    return {"processor_class": "LlavaNextProcessor", "image_token": "<image>", "patch_size": vision["patch_size"],
            "vision_feature_select_strategy": config["vision_feature_select_strategy"],
            "num_additional_image_tokens": int(vision["model_type"] == "clip_vision_model")}  # CLIP's [CLS]


def sample(variant, image=None, prompt=None, shipped=False) -> Sample:
    return Sample(image, None, prompt)


def seed_projector(model, factor=2, seed=0):
    """The seed's downsample projector at this model's widths, seeded (it has no trained weights here)."""
    torch.manual_seed(seed)
    width = model.config.vision_config.hidden_size * model.config.num_feature_layers
    return PixelShuffleProjector(width, model.config.text_config.hidden_size, factor=factor).eval()


@torch.no_grad()
def trace_next(model, processor, image=None, prompt=None, max_new_tokens=8):
    """Run LLaVA-NeXT / OneVision on one image + prompt, recording every stage. `processor` is the whole
    processor (weights_convert.load_processor): its image processor's anyres steps are shown one by
    one, then the processor itself makes input_ids and pixel_values, as a user's call would."""
    tokenizer, whole, processor = processor.tokenizer, processor, processor.image_processor
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
    batch = whole(images=rgb, text=full_prompt(prompt), return_tensors="pt")  # the real prompt path
    pixel_values, image_sizes = batch["pixel_values"].to(model.image_newline.device), batch["image_sizes"]
    stages.append(Stage("pixel_values", pixel_values, shape(pixel_values), "(images, tiles, 3, t, t), normalised"))

    layer, strategy = cfg.vision_feature_layer, cfg.vision_feature_select_strategy
    tiles_in = pixel_values[0, :len(tiles)].to(next(model.parameters()).dtype)
    hidden = model.vision_tower(tiles_in, output_hidden_states=True).hidden_states
    selected = select_features(hidden, layer, strategy)
    stages.append(Stage("vision tower", selected, shape(selected),
                        f"hidden_states[{layer}], '{strategy}': {selected.shape[1]} = {n} x {n} patches "
                        f"({'[CLS] dropped' if cfg.vision_config.class_token else 'no [CLS]'})"))
    projected = model.multi_modal_projector(selected)
    stages.append(Stage("projector", projected, shape(projected), "linear -> GELU -> linear, every patch"))
    if n % 2 == 0:
        downsampled = seed_projector(model)(selected)
        stages.append(Stage("downsample projector (seed)", downsampled, shape(downsampled),
                            f"2 x 2 space-to-depth -> LayerNorm -> linear-act-linear: {selected.shape[1]} -> "
                            f"{downsampled.shape[1]} tokens a tile (x 1/4); no HF counterpart"))
    grid = rearrange(projected[1:], "(r c) (h w) d -> (r h) (c w) d", r=rows, c=cols, h=n, w=n)
    stages.append(Stage("tile grid", grid, shape(grid), f"{rows} x {cols} tiles of {n} x {n} features side by side"))
    r0, r1, c0, c1 = unpad_bounds(size, grid.shape[:2])
    unpadded = grid[r0:r1, c0:c1]
    stages.append(Stage("unpadded grid", unpadded, shape(unpadded), f"rows {r0}:{r1}, cols {c0}:{c1} saw the "
                        "image; the rest saw padding", extra={"bounds": (r0, r1, c0, c1)}))
    resized = model.resize_grid(unpadded, n)
    if resized.shape != unpadded.shape:
        stages.append(Stage("shrunk grid", resized, shape(resized), "over anyres_max_N tiles' worth: bilinear"))
    features = model.get_image_features(pixel_values, image_sizes)[0]
    stages.append(Stage("image features", features, shape(features),
                        f"base {n * n} + {resized.shape[0]} rows x ({resized.shape[1]} + newline)"))

    ids = batch["input_ids"].to(pixel_values.device)  # the <image> expanded to one token per feature
    stages.append(Stage("prompt tokens", ids, shape(ids), token_view(ids[0], tokenizer, {cfg.image_token_index}),
                        extra={"placeholder": cfg.image_token_index}, ids=True))
    embeds, _ = model.embed(ids, pixel_values, image_sizes=image_sizes)
    stages.append(Stage("merged embeddings", embeds, shape(embeds), "image features at the <image> tokens"))
    logits = model(input_ids=ids, pixel_values=pixel_values, image_sizes=image_sizes).logits
    stages.append(Stage("logits", logits, shape(logits), f"next token: {int(logits[0, -1].argmax())}"))
    generated = model.generate(input_ids=ids, pixel_values=pixel_values, image_sizes=image_sizes,
                               max_new_tokens=max_new_tokens)[0, ids.shape[1]:]
    stages.append(Stage("generated tokens", generated, shape(generated), repr(tokenizer.decode(generated.tolist())),
                        ids=True))
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


def trace(loaded, sample, max_new_tokens=8):
    import weights_convert
    return trace_next(loaded.ours, weights_convert.load_processor(loaded.folder), sample.image, sample.prompt,
                      max_new_tokens)


def reference(loaded, sample, max_new_tokens=8, stages=None):
    ids = next(s.value for s in stages if s.name == "prompt tokens")
    return reference_next(loaded.reference, loaded.folder, sample.image, sample.prompt, max_new_tokens, ids)
