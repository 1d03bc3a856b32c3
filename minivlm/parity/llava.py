"""LLaVA parity cases: tiny LlavaForConditionalGeneration references over the merging corners.

Each config is checked twice, like LLaMA's: with labels (logits at real positions, the loss and the
projected image features) and without (logits, then greedy generate ids on the same left-padded
batch; HF's generate would forward labels into every decode step, so those cases carry none).
Prompts are random ids with runs of <image> tokens, one token per image feature, as the HF
processor writes them; rows are padded on the left.
"""
import torch

from ..models.llava import tokens_per_image
from .harness import ParityCase

VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
              image_size=30, patch_size=6)                        # 5 x 5 = 25 patches
TEXT = dict(vocab_size=71, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5,
            initializer_range=0.1)  # larger than HF's 0.02: peaked attention, so position bugs show
IMAGE_TOKEN = TEXT["vocab_size"] - 1
PAD = 0

# name -> (LlavaConfig overrides, text overrides, vision overrides, images per row).
CONFIGS = {
    "default-layer-2-gqa": (dict(), dict(), dict(), (1, 1)),
    "full-layer-1-no-bias-tanh": (dict(vision_feature_select_strategy="full", vision_feature_layer=-1,
                                       multimodal_projector_bias=False, projector_hidden_act="gelu_pytorch_tanh"),
                                  dict(num_key_value_heads=4), dict(image_size=24, patch_size=4), (1, 1)),
    "several-images-per-prompt": (dict(vision_feature_layer=1), dict(num_key_value_heads=1), dict(), (2, 0, 1)),
    "layer-list-tied-mqa": (dict(vision_feature_layer=[-3, -1], tie_word_embeddings=True),
                            dict(num_key_value_heads=1, num_attention_heads=2), dict(hidden_size=24), (1, 2)),
    "no-image-prompt": (dict(), dict(), dict(), (0, 0)),
    # SigLIP towers (no [CLS]): 'full' keeps every patch; 'default' drops the first patch as HF does.
    "siglip-full-qwen2-decoder": (dict(vision_feature_select_strategy="full", vision_feature_layer=-1),
                                  dict(decoder="Qwen2", tie_word_embeddings=True), dict(tower="Siglip"), (1, 2)),
    "siglip-default-layer-list-mistral": (dict(vision_feature_layer=[-2, 1]), dict(decoder="Mistral", sliding_window=6),
                                          dict(tower="Siglip", vision_use_head=False), (1, 1)),
}


def has_class_token(vision_config):
    """CLIP towers prepend [CLS]; SigLIP's do not (HF vision_config.model_type tells which)."""
    return getattr(vision_config, "model_type", "clip_vision_model") != "siglip_vision_model"


def features_per_image(config):
    v = config.vision_config
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    return tokens_per_image((size // v.patch_size) ** 2, has_class_token(v), config.vision_feature_select_strategy)


def left_padded_prompts(generator, runs_per_row, image_token, text_lengths=(11, 7, 5)):
    """Random text ids with one run of <image> tokens per entry of runs_per_row[r] (that run's length,
    or (length, token id) for another placeholder such as <video>), at random places, rows padded on
    the left: {"input_ids", "attention_mask"}, both (B, L)."""
    rows = []
    for r, runs in enumerate(runs_per_row):
        length = text_lengths[r % len(text_lengths)]
        text = torch.randint(3, image_token, (length,), generator=generator)
        cuts = sorted(torch.randint(0, length + 1, (len(runs),), generator=generator).tolist())
        pieces, start = [], 0
        for cut, run in zip(cuts, runs):  # images at random places in the text
            run, token = run if isinstance(run, tuple) else (run, image_token)  # (length, other token id)
            pieces += [text[start:cut], torch.full((run,), token)]
            start = cut
        rows.append(torch.cat(pieces + [text[start:]]))
    longest = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), longest), PAD)
    attention_mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, longest - len(row):] = row
        attention_mask[i, longest - len(row):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def llava_batch(config, generator, images_per_row, text_lengths=(11, 7, 5)):
    """Left-padded (B, L) ids with one run of <image> tokens per image, and (I, 3, H, W) pixels."""
    n = features_per_image(config)
    inputs = left_padded_prompts(generator, [[n] * k for k in images_per_row], config.image_token_index,
                                 text_lengths)
    if sum(images_per_row):
        v = config.vision_config
        hw = (v.image_size, v.image_size) if isinstance(v.image_size, int) else tuple(v.image_size)
        inputs["pixel_values"] = torch.randn(sum(images_per_row), v.num_channels, *hw, generator=generator)
    return inputs


def labels_for(inputs, image_token):
    """Train on text tokens only: padding and image tokens -> -100, and a masked prompt start."""
    ids = inputs["input_ids"]
    labels = ids.masked_fill((inputs["attention_mask"] == 0) | (ids == image_token), -100)
    labels[:, : ids.shape[1] // 3] = -100
    return labels


def real_positions(inputs):
    return inputs["attention_mask"].bool()


def sub_configs(text=(), vision=(), text_base=TEXT, vision_base=VISION):
    """HF vision and text configs from overrides; vision `tower` ('CLIP' / 'Siglip') and text `decoder`
    ('Llama' / 'Mistral' / 'Qwen2') pick the config classes."""
    import transformers
    vision, text = {**vision_base, **dict(vision)}, {**text_base, **dict(text)}
    tower, decoder = vision.pop("tower", "CLIP"), text.pop("decoder", "Llama")
    return (getattr(transformers, f"{tower}VisionConfig")(**vision),
            getattr(transformers, f"{decoder}Config")(**text))


def build_reference(overrides=(), text=(), vision=()):
    import transformers
    vision_config, text_config = sub_configs(text, vision)
    cfg = transformers.LlavaConfig(vision_config=vision_config, text_config=text_config,
                                   image_token_index=IMAGE_TOKEN, **dict(overrides))
    return transformers.LlavaForConditionalGeneration(cfg)


def image_prompt_cases(family, name, build, make_batch, has_images, feature_fields=("image_hidden_states",)):
    """Two cases per config: with labels (logits at real positions, loss, projected image features)
    and without (logits, then greedy ids on the same left-padded batch)."""
    def make_inputs(reference, generator, with_labels):
        inputs = make_batch(reference.config, generator)
        if with_labels:
            inputs["labels"] = labels_for(inputs, reference.config.image_token_index)
        return inputs

    fields = ("logits", "loss") + (tuple(feature_fields) if has_images else ())
    return [ParityCase(family, f"{name}/loss", build, lambda r, g: make_inputs(r, g, True), fields,
                       valid_positions=real_positions),
            ParityCase(family, f"{name}/generate", build, lambda r, g: make_inputs(r, g, False), ("logits",),
                       generate=dict(max_new_tokens=8), valid_positions=real_positions)]


def _cases(name, overrides, text, vision, images):
    return image_prompt_cases("llava", name, lambda: build_reference(overrides, text, vision),
                              lambda config, generator: llava_batch(config, generator, images), sum(images) > 0)


CASES = []
for _name, (_o, _t, _v, _images) in CONFIGS.items():
    CASES += _cases(_name, _o, _t, _v, _images)
