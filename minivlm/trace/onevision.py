"""Follow several images, or a video, through LLaVA-OneVision (one image alone: trace/llava_next.py).

    images: each image -> its tiles (I, tiles, 3, t, t) -> only the base tile is read when a prompt
            holds several images (HF's batch_num_images) -> features + one newline per image
    video:  frames -> (V, F, 3, t, t) -> the tower on every frame -> 2 x 2 bilinear pooling ->
            the frames in a row + one newline
    -> prompt tokens (the processor expands each <image> / <video>) -> merged embeddings -> logits
       -> generated tokens

Both sides make the same calls: the model's feature getter, its forward with a hook on the language
model for the merged embeddings, greedy generate. HF's model reads our processor's input_ids (and,
for a video, our pixel_values_videos: transformers' video processors need torchvision), so those
stages are not compared; HF's own image processor makes its pixel_values for the images.
"""
import torch
from PIL import Image

from ..errors import UsageError
from ..processing.image import load_image
from . import llava_next
from .capture import input_of
from .families import Sample
from .inputs import default_image
from .stage import Stage, first_stop, shape, token_view

TITLE = {"images": "LLaVA-OneVision (several images)", "video": "LLaVA-OneVision (video)"}
SHIPPED = {}


def write_tiny(folder, variant) -> dict:
    return llava_next.write_tiny(folder, "onevision")


def sample(variant, image=None, prompt=None, shipped=False) -> Sample:
    if image is not None:
        raise UsageError("--image gives one image; llava_onevision_images / _video trace their own images or "
                         "frames (use --model llava_onevision for your image)")
    return Sample(None, None, prompt)


def inputs_of(variant):
    """(images or None, video frames (F, H, W, 3) uint8 or None, the prompt's placeholders)."""
    from ..data.shapes import ShapesWorld, moving_shape_frames
    if variant == "images":
        photo = load_image(default_image()).convert("RGB").resize((60, 40), Image.BICUBIC)
        return [photo, ShapesWorld(image_size=48).scene(0).image], None, "<image>\n<image>\n"
    return None, moving_shape_frames(4, image_size=48), "<video>\n"


@torch.no_grad()
def run_parts(model, batch, video, max_new_tokens, features, **generate_kwargs):
    """{stage name: tensor} of either side; `features` is the one call whose arguments differ."""
    key = "pixel_values_videos" if video else "pixel_values"
    out = {key: batch[key]}
    found = features(model, batch)
    found = getattr(found, "pooler_output", found)
    out["video features" if video else "image features"] = torch.cat([f.reshape(-1, f.shape[-1]) for f in found])
    out["prompt tokens"] = batch["input_ids"]
    children = dict(model.named_children())  # ours holds language_model; HF's, model.language_model
    with input_of(children["language_model"] if "language_model" in children else model.model.language_model) as seen:
        logits = model(**batch).logits
    out["merged embeddings"], out["logits"] = seen["inputs_embeds"], logits
    generated = model.generate(**batch, max_new_tokens=max_new_tokens, **generate_kwargs)
    out["generated tokens"] = generated[0, batch["input_ids"].shape[1]:]
    return out


def _ours_features(model, batch):
    if "pixel_values_videos" in batch:
        return model.get_video_features(batch["pixel_values_videos"])
    return model.get_image_features(batch["pixel_values"], batch["image_sizes"],
                                    tiled=[False] * len(batch["image_sizes"]))  # several images: base tiles


def _hf_features(model, batch):
    if "pixel_values_videos" in batch:
        return model.model.get_video_features(batch["pixel_values_videos"])
    return model.model.get_image_features(batch["pixel_values"], batch["image_sizes"],
                                          batch_num_images=batch["batch_num_images"])


def _batch(loaded, sample):
    import weights_convert
    processor = weights_convert.load_processor(loaded.folder)
    images, frames, placeholders = inputs_of(loaded.variant)
    text = f"USER: {placeholders}{sample.prompt or 'What is in the picture?'} ASSISTANT:"
    batch = processor(images=[images] if images else None, videos=[frames] if frames is not None else None,
                      text=text, return_tensors="pt")
    keep = ("input_ids", "pixel_values", "image_sizes", "batch_num_images", "pixel_values_videos")
    return processor, images, frames, {k: v for k, v in batch.items() if k in keep}


def trace(loaded, sample, max_new_tokens=8):
    model, video = loaded.ours, loaded.variant == "video"
    processor, images, frames, batch = _batch(loaded, sample)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    batch = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}
    if video:
        stages = [Stage("video frames", [Image.fromarray(f) for f in frames], f"{len(frames)} x {frames.shape[1]}x"
                        f"{frames.shape[2]}", "RGB frames, uint8")]
    else:
        stages = [Stage(f"image {i + 1}", im, f"{im.width}x{im.height} RGB") for i, im in enumerate(images)]
    parts = run_parts(model, batch, video, max_new_tokens, _ours_features)
    cfg, tokenizer = model.config, processor.tokenizer
    placeholder = cfg.video_token_index if video else cfg.image_token_index
    notes = {"pixel_values": "(images, tiles, 3, t, t): every image tiled, as the processor makes it",
             "pixel_values_videos": "(videos, frames, 3, t, t)",
             "image features": "several images in one prompt: each image's base tile only, + a newline",
             "video features": "each frame 2 x 2 pooled, the frames in a row, + one newline",
             "merged embeddings": "features written at the placeholder tokens"}
    for name, value in parts.items():
        extra, note = {}, notes.get(name, "")
        if name == "prompt tokens":
            note, extra = token_view(value[0], tokenizer, {placeholder}), {"placeholder": placeholder}
        elif name == "generated tokens":
            note = repr(tokenizer.decode(first_stop(value.tolist(), cfg.text_config.eos_token_id)))
        stages.append(Stage(name, value, shape(value), note, extra=extra, ids=name in ("prompt tokens", "generated tokens")))
    return stages


def reference(loaded, sample, max_new_tokens=8, stages=None):
    import transformers
    hf, video = loaded.reference, loaded.variant == "video"
    _, images, _, batch = _batch(loaded, sample)
    if not video:  # transformers' own image processor on the same images
        hf_images = transformers.LlavaOnevisionImageProcessorPil.from_pretrained(loaded.folder)([images], return_tensors="pt")
        batch["pixel_values"] = hf_images["pixel_values"]
    batch = {k: v.to(hf.device, hf.dtype) if v.is_floating_point() else v.to(hf.device) for k, v in batch.items()}
    out = run_parts(hf, batch, video, max_new_tokens, _hf_features, do_sample=False)
    del out["prompt tokens"]  # our processor's ids, fed to HF's model: nothing to compare
    if video:
        del out["pixel_values_videos"]  # ours too
    return out
