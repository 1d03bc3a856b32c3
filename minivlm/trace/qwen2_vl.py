"""Follow one image + prompt through Qwen2-VL, stage by stage, with shapes and the HF reference.

    image file -> RGB -> smart_resize (native resolution: sides multiples of 28) -> flat patches
      (N, 3*2*14*14) + image_grid_thw -> Conv3d patch embedding -> encoder layers (2-D RoPE)
      -> PatchMerger (2x2 -> one token) -> prompt with <|image_pad|> x N/4 -> M-RoPE positions
      (3, 1, L) -> merged embeddings -> decoder -> logits -> generated tokens

`trace_qwen2_vl` records minivlm's stages, `reference_qwen2_vl` the same stages from transformers'
Qwen2VLForConditionalGeneration (or Qwen2.5-VL's) and Qwen2VLImageProcessorPil, the encoder layers
read with hooks on its blocks; stage.compare puts max |diff| beside each. `python -m minivlm trace
--model qwen2_vl` (qwen2_5_vl) and notebooks/09_qwen2_vl.ipynb sit on these.

The default needs no download: a tiny Qwen2-VL built from a config with a fixed seed (random weights:
its words are noise), the tiny character tokenizer with Qwen's special tokens added, and
a processor with Qwen2-VL's real patch sizes but a small max_pixels.
"""
import inspect
import json
from pathlib import Path

import torch
from PIL import Image

from ..processing.image import load_image
from ..processing.tiny_tokenizer import added_token_ids, write_tiny_tokenizer
from .capture import input_of, outputs_of
from .families import Sample
from .inputs import default_image, image_stages
from .llava import DEFAULT_QUESTION
from .stage import Stage, shape, token_view

TITLE = {"2": "Qwen2-VL", "2.5": "Qwen2.5-VL", "2-video": "Qwen2-VL (video)", "2.5-video": "Qwen2.5-VL (video)"}
SHIPPED = {}
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
ADDED = [VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD, "<|im_start|>", "<|im_end|>", "<pad>"]
MAX_PIXELS = 28 * 28 * 64   # the default processor: at most 64 LM tokens per image


def chat_prompt(question, n_image_tokens):
    """Qwen2-VL's chat template for one image and a question, the image already expanded to its tokens."""
    image = VISION_START + IMAGE_PAD * n_image_tokens + VISION_END
    return f"<|im_start|>user\n{image}{question}<|im_end|>\n<|im_start|>assistant\n"


def tiny_config(vocab_size, version="2"):
    """A tiny Qwen2-VL (or Qwen2.5-VL: RMSNorm + SwiGLU tower, 2 x 2-token windows but on layer 1) as
    an HF config dict, with Qwen2-VL's real patch sizes."""
    ids = added_token_ids(ADDED)
    vision = {"depth": 3, "embed_dim": 64, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    if version == "2.5":
        vision = {"depth": 3, "hidden_size": 64, "out_hidden_size": 64, "intermediate_size": 96, "num_heads": 4,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                  "fullatt_block_indexes": [1], "tokens_per_second": 2}
    return {
        "architectures": ["Qwen2VLForConditionalGeneration" if version == "2" else "Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_vl" if version == "2" else "qwen2_5_vl",
        "image_token_id": ids[IMAGE_PAD], "video_token_id": ids[VIDEO_PAD], "vision_start_token_id": ids[VISION_START],
        "vision_end_token_id": ids[VISION_END], "vision_config": vision,
        "text_config": {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
                        "initializer_range": 0.1, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": ids["<pad>"],
                        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
    }


def write_tiny(folder, variant="2") -> dict:
    """The tokenizer with Qwen's special tokens and Qwen2-VL's image processor with a small max_pixels."""
    version = variant.split("-")[0]
    config = tiny_config(write_tiny_tokenizer(folder, ADDED), version)
    processor = {"image_processor_type": "Qwen2VLImageProcessor", "do_resize": True, "resample": 3,
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                 "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
                 "do_convert_rgb": True, "size": {"shortest_edge": 28 * 28 * 4, "longest_edge": MAX_PIXELS},
                 "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(processor))
    video = {"video_processor_type": "Qwen2VLVideoProcessor", "min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16,
             "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
    (Path(folder) / "video_preprocessor_config.json").write_text(json.dumps(video))
    cls = "Qwen2VLProcessor" if version == "2" else "Qwen2_5_VLProcessor"
    (Path(folder) / "processor_config.json").write_text(json.dumps({"processor_class": cls}))
    return config


def sample(variant, image=None, prompt=None, shipped=False) -> Sample:
    return Sample(image, None, prompt)


def position_note(positions, ids, image_token_id):
    """Where the image's positions start and where text resumes, in words."""
    pos, is_image = positions[:, 0], (ids[0] == image_token_id)
    first, last = int(is_image.nonzero()[0]), int(is_image.nonzero()[-1])
    start = pos[:, first].tolist()
    after = pos[:, last + 1].tolist() if last + 1 < pos.shape[1] else None
    h, w = int(pos[1, is_image].max()) - start[1] + 1, int(pos[2, is_image].max()) - start[2] + 1
    return (f"text (p, p, p); image tokens (t, h, w) from {tuple(start)} over a {h}x{w} grid; "
            f"text resumes at {tuple(after) if after else '-'} = start + max(h, w)")


def placeholder_prompt(question, video=False):
    """Qwen2-VL's chat template for one image (or video) and a question, one placeholder: the
    processor expands it to the features' count."""
    pad = VIDEO_PAD if video else IMAGE_PAD
    return f"<|im_start|>user\n{VISION_START}{pad}{VISION_END}{question}<|im_end|>\n<|im_start|>assistant\n"


def shapes_video(frames=4, size=56):
    """The default video: a red circle sliding left to right (data/shapes.py), (F, H, W, 3) uint8."""
    from ..data.shapes import moving_shape_frames
    return moving_shape_frames(frames, image_size=size)


@torch.no_grad()
def trace_qwen2_vl(model, processor, image=None, prompt=None, max_new_tokens=8, video=None):
    """Run one image (or `video`, (F, H, W, 3) uint8) + prompt through minivlm's Qwen2-VL; returns the
    list of Stages. `processor` is the whole processor (weights_convert.load_processor)."""
    cfg, tower = model.config, model.visual
    tokenizer, whole = processor.tokenizer, processor
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    text = placeholder_prompt(prompt or DEFAULT_QUESTION, video is not None)
    if video is None:
        stages, rgb = image_stages(processor.image_processor, image)
        geo = processor.image_processor.geometry(rgb)
        size = processor.image_processor.size
        stages.append(Stage("smart_resize", geo, f"{geo.width}x{geo.height}",
                            f"sides -> multiples of {processor.image_processor.factor}, {geo.width * geo.height} px in "
                            f"[{size['shortest_edge']}, {size['longest_edge']}]"))
        batch = whole(images=rgb, text=text, return_tensors="pt")  # the real prompt path
        key, token_id, pad = "pixel_values", cfg.image_token_id, IMAGE_PAD
    else:
        stages = [Stage("video frames", [Image.fromarray(f) for f in video], f"{len(video)} x {video.shape[1]}x{video.shape[2]}",
                        "RGB frames, uint8")]
        batch = whole(videos=[video], text=text, return_tensors="pt")
        key, token_id, pad = "pixel_values_videos", cfg.video_token_id, VIDEO_PAD
    grid_key = "image_grid_thw" if video is None else "video_grid_thw"
    pixel_values, grid = batch[key].to(device, dtype), batch[grid_key].to(device)
    extra_inputs = {k: batch[k].to(device) for k in ("second_per_grid_ts",) if k in batch}
    t, h, w = grid[0].tolist()
    patch = processor.image_processor
    stages.append(Stage(key, pixel_values, shape(pixel_values),
                        f"grid t x h x w = {t}x{h}x{w} patches of 3x{patch.temporal_patch_size}x{patch.patch_size}x"
                        f"{patch.patch_size}" + (" (the image twice in time)" if video is None else
                                                 f" ({len(video)} frames, {patch.temporal_patch_size} a slice)"),
                        extra={"grid": (t, h, w)}))
    embedded = tower.patch_embed(pixel_values)
    stages.append(Stage("patch embedding", embedded, shape(embedded), "Conv3d = one Linear per patch; no position table"))
    hidden = tower(pixel_values, grid, output_hidden_states=True, what=key)
    for i, state in enumerate(hidden.hidden_states[1:], 1):
        stages.append(Stage(f"encoder layer {i}", state[0], shape(state[0]), "2-D RoPE (row, col) in attention"))
    merged_tokens = hidden.pooler_output
    m = cfg.vision_config.spatial_merge_size
    stages.append(Stage("patch merger", merged_tokens, shape(merged_tokens),
                        f"{m}x{m} neighbours -> 1: {t}x{h}x{w} patches -> {t * (h // m) * (w // m)} LM tokens"))
    ids = batch["input_ids"].to(device)  # the placeholder expanded to one token per merged patch
    n = int((ids == token_id).sum())
    stages.append(Stage("prompt tokens", ids, shape(ids), f"{n} {pad} + {ids.shape[1] - n} text: "
                        + token_view(ids[0], tokenizer, {token_id}), extra={"placeholder": token_id}, ids=True))
    visual = {key: pixel_values, grid_key: grid}
    positions = model.position_ids(ids, **{grid_key: grid}, **extra_inputs)  # (3, 1, L)
    stages.append(Stage("M-RoPE positions", positions, shape(positions), position_note(positions, ids, token_id)))
    embeds = model.embed(ids, **visual)
    stages.append(Stage("merged embeddings", embeds, shape(embeds), f"features written at the {pad} positions"))
    body = model.language_model.model(inputs_embeds=embeds, position_ids=positions).last_hidden_state
    stages.append(Stage("decoder", body, shape(body), f"{cfg.text_config.num_hidden_layers} Qwen2 layers, M-RoPE "
                                                      f"sections {cfg.text_config.rope_parameters['mrope_section']}"))
    logits = model.language_model.lm_head(body)
    top = tokenizer.convert_ids_to_tokens(logits[0, -1].float().topk(5).indices.tolist())
    stages.append(Stage("logits", logits, shape(logits), f"next token {top[0]!r}", extra={"top_tokens": top}))
    generated = model.generate(input_ids=ids, **visual, **extra_inputs, max_new_tokens=max_new_tokens)
    new = generated[0, ids.shape[1]:]
    stages.append(Stage("generated tokens", new, f"{len(new)} new", repr(tokenizer.decode(new)), ids=True))
    return stages


@torch.no_grad()
def reference_qwen2_vl(reference, folder, image=None, prompt=None, max_new_tokens=8, stages=None, video=None):
    """The same stages from transformers' model, image processor and tokenizer (read from `folder`).
    A video: transformers' video processors need torchvision, so HF's model reads our
    pixel_values_videos (that stage is not compared; every later one is)."""
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    device, dtype = reference.device, reference.dtype
    if video is None:
        proc = transformers.Qwen2VLImageProcessorPil.from_pretrained(folder)
        batch = proc(load_image(image if image is not None else default_image()), return_tensors="pt")
        key, grid_key, token_id, pad = "pixel_values", "image_grid_thw", reference.config.image_token_id, IMAGE_PAD
        pv, grid = batch[key].to(device, dtype), batch[grid_key].to(device)
        out = {key: pv}
    else:
        key, grid_key, token_id, pad = "pixel_values_videos", "video_grid_thw", reference.config.video_token_id, VIDEO_PAD
        pv = next(s.value for s in stages if s.name == key).to(device, dtype)
        grid = torch.tensor([next(s.extra["grid"] for s in stages if s.name == key)], device=device)
        out = {}
    visual = reference.model.visual
    out["patch embedding"] = visual.patch_embed(pv)
    with outputs_of(visual.blocks) as captured:
        out["patch merger"] = visual(pv, grid_thw=grid).pooler_output
    out.update({f"encoder layer {i}": state for i, state in enumerate(captured, 1)})
    n = out["patch merger"].shape[0]
    text = placeholder_prompt(prompt or DEFAULT_QUESTION, video is not None).replace(pad, pad * n)
    ids = torch.tensor([tok(text).input_ids], device=device)
    types = (ids == token_id).long() * (2 if video is not None else 1)
    extra = {}
    if video is not None and "second_per_grid_ts" in inspect.signature(reference.model.get_rope_index).parameters:
        extra["second_per_grid_ts"] = torch.tensor([reference.config.vision_config.temporal_patch_size / 24.0])
    out["prompt tokens"] = ids
    out["M-RoPE positions"] = reference.model.get_rope_index(ids, types, **{grid_key: grid}, **extra)[0]
    inputs = dict(input_ids=ids, mm_token_type_ids=types, **{key: pv, grid_key: grid}, **extra)
    with input_of(reference.model.language_model) as seen:
        out["decoder"] = reference.model(**inputs).last_hidden_state
    out["merged embeddings"] = seen["inputs_embeds"]
    out["logits"] = reference(**inputs).logits
    generated = reference.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    out["generated tokens"] = generated[0, ids.shape[1]:]
    return out


def sample_video(variant, image):
    """The video a video variant traces: --image is refused (a video comes as frames)."""
    return shapes_video() if variant.endswith("video") else None


def trace(loaded, sample, max_new_tokens=8):
    import weights_convert
    return trace_qwen2_vl(loaded.ours, weights_convert.load_processor(loaded.folder), sample.image, sample.prompt,
                          max_new_tokens, video=sample_video(loaded.variant, sample.image))


def reference(loaded, sample, max_new_tokens=8, stages=None):
    return reference_qwen2_vl(loaded.reference, loaded.folder, sample.image, sample.prompt, max_new_tokens, stages,
                              video=sample_video(loaded.variant, sample.image))
