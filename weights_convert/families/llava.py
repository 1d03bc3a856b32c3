"""LlavaForConditionalGeneration checkpoints (llava-hf/llava-1.5-*), as stored on disk.

A LLaVA file is three known maps under prefixes plus the projector. The same tensors appear under
three spellings, and a file holds one of them:

    part          hub llava-hf files              transformers 5 save_pretrained   transformers 5 in memory
    vision tower  vision_tower.vision_model.*     vision_tower.*                   model.vision_tower.*
    projector     multi_modal_projector.*         multi_modal_projector.*          model.multi_modal_projector.*
    decoder       language_model.model.*          language_model.model.*           model.language_model.*
    head          language_model.lm_head.weight   language_model.lm_head.weight    lm_head.weight

Ours: vision_tower.* (the VisionTransformer), multi_modal_projector.linear_{k}.*,
language_model.model.* and language_model.lm_head.weight (a LlamaForCausalLM).

The tower is CLIP's or SigLIP's (vision_config.model_type; a SigLIP tower keeps its attention-pooling
head, which LLaVA never reads but the file holds), the decoder any LLaMA-family one
(text_config.model_type llama / mistral / qwen2, families/llama.py DECODERS).
"""
from minivlm.models.llava import LlavaConfig, LlavaForConditionalGeneration, llava_vision_config

from ..engine import KeyMap, Rule
from ..registry import Family, register
from . import siglip
from .clip import VISION_TOWER as CLIP_TOWER
from .clip import vision_config as clip_vision_config
from .llama import BODY, decoder_config

# HF's LlamaConfig defaults: hub LLaVA files often store only what differs (vocab_size, rms_norm_eps ...).
LLAMA_DEFAULTS = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32)


# vision_config.model_type -> (its VisionConfig translation, its key map relative to the tower's root).
TOWERS = {
    "clip_vision_model": (clip_vision_config, lambda hf: CLIP_TOWER),
    "siglip_vision_model": (siglip.vision_config, siglip.vision_keymap),
}


def vision_tower(hf):
    """(VisionConfig, KeyMap) of the LLaVA file's tower; a tower minivlm does not build is refused by name."""
    vision = hf.get("vision_config")
    if not vision:
        return llava_vision_config(), CLIP_TOWER
    kind = vision.get("model_type", "clip_vision_model")
    if kind not in TOWERS:
        raise ValueError(f"a {kind!r} vision tower is not supported in LLaVA; vision_config.model_type must be "
                         f"one of {sorted(TOWERS)}")
    config, keymap = TOWERS[kind]
    return config(vision), keymap(vision)


def text_config(hf, default_kind="llama"):
    text = dict(hf.get("text_config") or {"model_type": default_kind})
    # LlavaConfig forwards tie_word_embeddings from either level (configuration_llava.py).
    text["tie_word_embeddings"] = bool(hf.get("tie_word_embeddings") or text.get("tie_word_embeddings"))
    kind = text.get("model_type") or default_kind
    defaults = LLAMA_DEFAULTS if kind == "llama" else {}
    try:
        return decoder_config({**defaults, **text}, default_kind)
    except ValueError as e:
        raise ValueError(f"LLaVA's text_config: {e}") from None


def llava_config(hf):
    vision = vision_tower(hf)[0]
    text = text_config(hf)
    layer = hf.get("vision_feature_layer", -2)
    return LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_index=hf.get("image_token_index", hf.get("image_token_id", 32000)),
        image_seq_length=hf.get("image_seq_length", 576),
        projector_hidden_act=hf.get("projector_hidden_act", "gelu"),
        multimodal_projector_bias=hf.get("multimodal_projector_bias", True),
        vision_feature_layer=layer if isinstance(layer, int) else list(layer),
        vision_feature_select_strategy=hf.get("vision_feature_select_strategy", "default"),
        tie_word_embeddings=text.tie_word_embeddings,
    )


PROJECTOR = KeyMap([Rule("linear_{k}.{wb}", "multi_modal_projector.linear_{k}.{wb}")])
HEAD = KeyMap([Rule("lm_head.weight", "language_model.lm_head.weight")])


def llava_keymap(hf):
    tied = llava_config(hf).tie_word_embeddings
    tower = vision_tower(hf)[1]
    parts = [
        # vision tower: hub / transformers 5 save / transformers 5 state_dict
        tower.prefixed("vision_tower.vision_model.", "vision_tower."),
        tower.prefixed("vision_tower.", "vision_tower."),
        tower.prefixed("model.vision_tower.", "vision_tower."),
        # projector
        PROJECTOR.prefixed("multi_modal_projector.", ""),
        PROJECTOR.prefixed("model.multi_modal_projector.", ""),
        # decoder and head
        BODY.prefixed("language_model.model.", "language_model.model."),
        BODY.prefixed("model.language_model.", "language_model.model."),
        HEAD.prefixed("language_model.", ""),
        HEAD,
    ]
    keymap = parts[0]
    for part in parts[1:]:
        keymap = keymap + part
    if tied:  # transformers 5 leaves the tied head out of the file
        keymap = keymap + KeyMap([], tied={"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"})
    return keymap


register("LlavaForConditionalGeneration")(Family(
    name="llava",
    build=lambda hf: LlavaForConditionalGeneration(llava_config(hf)),
    keymap=llava_keymap,
))
