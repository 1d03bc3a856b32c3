"""LLaVA-OneVision parity cases: tiny LlavaOnevisionForConditionalGeneration references (SigLIP towers,
Qwen2 / LLaMA decoders) fed one tiled image per prompt (sizes whose unpadded grid the anyres_max rule
shrinks), several images in one prompt (base tiles only), and videos (odd and even patch grids, so
the 2x2 bilinear pooling rounds up), all in left-padded batches. The <image> / <video> runs are as
long as onevision_image_tokens / video_tokens say; HF raises when that disagrees with its features."""
import torch

from ..models.llava_onevision import max_tiles_of, onevision_image_tokens, video_tokens
from ..processing.anyres import num_tiles
from .llava import image_prompt_cases, left_padded_prompts, sub_configs
from .llava_next import geometry_of

VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
              image_size=12, patch_size=6, tower="Siglip", vision_use_head=False)
TEXT = dict(vocab_size=73, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, decoder="Qwen2", initializer_range=0.1)
PINPOINTS = [[12 * r, 12 * c] for r in range(1, 4) for c in range(1, 4)]
IMAGE_TOKEN, VIDEO_TOKEN = TEXT["vocab_size"] - 1, TEXT["vocab_size"] - 2

# name -> (config overrides, text overrides, vision overrides, rows); a row is (image sizes, video frames).
CONFIGS = {
    "single-images-shrink-max-1-tied": (
        dict(vision_aspect_ratio="anyres_max_1"), dict(tie_word_embeddings=True), dict(),
        [([(27, 104)], None), ([(50, 50)], None), ([(13, 7)], None)]),
    "several-images-and-videos-odd-grid": (
        dict(vision_aspect_ratio="anyres_max_2"), dict(), dict(patch_size=4),           # 3 x 3 patches
        [([(33, 47), (5, 30)], None), ([(40, 90)], 3), ([], 2)]),
    "image-and-video-per-row-llama-layer-list": (
        dict(vision_feature_layer=[-3, -1]), dict(decoder="Llama", num_key_value_heads=1),
        dict(patch_size=3, vision_use_head=True),                                     # 4 x 4 patches
        [([(120, 31)], 2), ([(7, 7), (9, 100), (30, 30)], 1)]),
}


def onevision_batch(config, generator, rows, text_lengths=(11, 7, 5)):
    """Left-padded ids with an <image> run per image and a <video> run per video, pixel_values
    (I, max tiles, 3, t, t) (every image gets its full tile stack, as the processor makes it; the
    model reads the base tile alone in several-image prompts), image_sizes, batch_num_images and
    pixel_values_videos (V, F, 3, t, t)."""
    geometry, max_tiles = geometry_of(config), max_tiles_of(config.vision_aspect_ratio)
    n, t = geometry.patches_per_side, geometry.tile_size
    runs = []
    for sizes, frames in rows:
        row = [onevision_image_tokens(s, geometry, max_tiles, tiled=len(sizes) == 1) for s in sizes]
        runs.append(row + ([(video_tokens(frames, n), config.video_token_index)] if frames else []))
    inputs = left_padded_prompts(generator, runs, config.image_token_index, text_lengths)
    sizes = [s for row, _ in rows for s in row]
    if sizes:
        counts = [num_tiles(s, geometry) for s in sizes]
        pixels = torch.zeros(len(sizes), max(counts), 3, t, t)
        for i, k in enumerate(counts):
            pixels[i, :k] = torch.randn(k, 3, t, t, generator=generator)
        inputs.update(pixel_values=pixels, image_sizes=torch.tensor(sizes),
                      batch_num_images=torch.tensor([len(row) for row, _ in rows if row]))
    frames = [f for _, f in rows if f]
    if frames:
        inputs["pixel_values_videos"] = torch.randn(len(frames), frames[0], 3, t, t, generator=generator)
    return inputs


def uniform_frames(rows):
    """Every video of a batch with the same frame count (the tensor is (V, F, 3, t, t))."""
    frames = [f for _, f in rows if f]
    least = min(frames) if frames else None
    return [(sizes, least if f else None) for sizes, f in rows]


def build_reference(overrides=(), text=(), vision=()):
    import transformers
    vision_config, text_config = sub_configs(text, vision, TEXT, VISION)
    overrides = {"image_token_index": IMAGE_TOKEN, "video_token_index": VIDEO_TOKEN, "image_grid_pinpoints": PINPOINTS,
                 **dict(overrides)}
    cfg = transformers.LlavaOnevisionConfig(vision_config=vision_config, text_config=text_config, **overrides)
    return transformers.LlavaOnevisionForConditionalGeneration(cfg)


CASES = []
for _name, (_o, _t, _v, _rows) in CONFIGS.items():
    _rows = uniform_frames(_rows)
    _fields = (("image_hidden_states",) if any(s for s, _ in _rows) else ()) + \
              (("video_hidden_states",) if any(f for _, f in _rows) else ())
    CASES += image_prompt_cases("llava_onevision", _name,
                                lambda o=_o, t=_t, v=_v: build_reference(o, t, v),
                                lambda config, generator, rows=_rows: onevision_batch(config, generator, rows),
                                True, _fields)
