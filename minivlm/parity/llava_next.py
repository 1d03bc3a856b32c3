"""LLaVA-NeXT parity cases: tiny LlavaNextForConditionalGeneration references fed batches of images of
different sizes (so different tile counts and token counts per image), several images per prompt,
left padding. Like LLaVA's: each config with labels (logits, loss, image_hidden_states) and without
(logits, then greedy ids). The <image> runs are as long as anyres.num_image_tokens says — HF raises
if that disagrees with the features its model makes, so these cases test the count too."""
import torch

from ..processing.anyres import AnyresGeometry, num_image_tokens, num_tiles
from .llava import TEXT, has_class_token, image_prompt_cases, left_padded_prompts, sub_configs

VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
              image_size=12, patch_size=6)                        # tiles of 12 px, 2 x 2 patches
PINPOINTS = [[12, 24], [24, 12], [24, 24], [36, 12], [12, 36]]
IMAGE_TOKEN = TEXT["vocab_size"] - 1

# name -> (LlavaNextConfig overrides, text overrides, vision overrides, image sizes per row)
CONFIGS = {
    "seed-27x104-both-ways": (dict(), dict(), dict(), [[(27, 104)], [(104, 27)]]),
    "odd-sizes-several-per-prompt-layer-list": (
        dict(vision_feature_layer=[-3, -1]), dict(num_key_value_heads=1), dict(),
        [[(5, 301), (50, 50)], [], [(13, 7)]]),
    "patch-3-wide-grids-gelu-tanh": (
        dict(image_grid_pinpoints=[[24, 36], [36, 24], [12, 48], [24, 24]], vision_feature_layer=1,
             projector_hidden_act="gelu_pytorch_tanh", multimodal_projector_bias=False),
        dict(), dict(patch_size=3), [[(33, 47)], [(600, 512), (200, 1000)]]),
    "tied-mqa-tall": (dict(tie_word_embeddings=True), dict(num_key_value_heads=1, num_attention_heads=2),
                      dict(hidden_size=24), [[(301, 5), (7, 7)], [(40, 90)]]),
    # The seed's design: a SigLIP tower ('full' keeps the whole grid), 27x104 in a batch with other sizes.
    "siglip-full-27x104-with-others": (dict(vision_feature_select_strategy="full", vision_feature_layer=-1),
                                       dict(), dict(tower="Siglip"), [[(27, 104), (50, 50)], [(104, 27)], [(13, 7)]]),
    "siglip-layer-list-mistral-window-5": (
        dict(vision_feature_select_strategy="full", vision_feature_layer=[-3, -2]),
        dict(decoder="Mistral", sliding_window=5), dict(tower="Siglip", vision_use_head=False, patch_size=4),
        [[(27, 104)], [(200, 31), (9, 9)]]),
    "clip-mistral-window-7": (dict(), dict(decoder="Mistral", sliding_window=7, num_key_value_heads=1), dict(),
                              [[(33, 47)], [(47, 33)]]),
}


def geometry_of(config):
    v = config.vision_config
    return AnyresGeometry(config.image_grid_pinpoints, v.image_size, v.patch_size,
                          config.vision_feature_select_strategy, class_token=has_class_token(v))


def llava_next_batch(config, generator, sizes_per_row, text_lengths=(11, 7, 5)):
    """Left-padded ids with one run of <image> tokens per image (num_image_tokens long), pixel_values
    (I, max tiles, 3, t, t) with zero tiles padding short stacks, as the processor pads, and image_sizes."""
    geometry = geometry_of(config)
    runs = [[num_image_tokens(size, geometry) for size in sizes] for sizes in sizes_per_row]
    inputs = left_padded_prompts(generator, runs, config.image_token_index, text_lengths)
    sizes = [s for row in sizes_per_row for s in row]
    if sizes:
        counts = [num_tiles(s, geometry) for s in sizes]
        t = geometry.tile_size
        pixels = torch.zeros(len(sizes), max(counts), 3, t, t)
        for i, k in enumerate(counts):
            pixels[i, :k] = torch.randn(k, 3, t, t, generator=generator)
        inputs["pixel_values"], inputs["image_sizes"] = pixels, torch.tensor(sizes)
    return inputs


def build_reference(overrides=(), text=(), vision=()):
    import transformers
    overrides = {"image_grid_pinpoints": PINPOINTS, **dict(overrides)}
    vision_config, text_config = sub_configs(text, vision, TEXT, VISION)
    cfg = transformers.LlavaNextConfig(vision_config=vision_config, text_config=text_config,
                                       image_token_index=IMAGE_TOKEN, **overrides)
    return transformers.LlavaNextForConditionalGeneration(cfg)


def _cases(name, overrides, text, vision, sizes):
    return image_prompt_cases("llava_next", name, lambda: build_reference(overrides, text, vision),
                              lambda config, generator: llava_next_batch(config, generator, sizes), True)


CASES = []
for _name, (_o, _t, _v, _sizes) in CONFIGS.items():
    CASES += _cases(_name, _o, _t, _v, _sizes)
