"""LlavaOnevisionForConditionalGeneration checkpoints (llava-hf/llava-onevision-qwen2-*): the tensors
are LLaVA-NeXT's (same names, same image_newline); the config adds the video token and
vision_aspect_ratio, and its defaults differ (Qwen2 decoder, SigLIP 'full' at layer -1)."""
from minivlm.models.llava_onevision import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

from ..registry import Family, register
from .llava import llava_keymap
from .llava_next import NEWLINE, llava_next_config

# HF LlavaOnevisionConfig's defaults for what a file may leave out.
DEFAULTS = dict(vision_feature_layer=-1, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9")


def with_defaults(hf):
    hf = {**DEFAULTS, **hf}
    for name, default in [("image_token_index", 151646), ("video_token_index", 151647)]:  # or HF's *_token_id alias
        hf[name] = hf.get(name, hf.get(name.replace("_index", "_id"), default))
    hf["image_grid_pinpoints"] = hf.get("image_grid_pinpoints") or [list(p) for p in
                                                                   LlavaOnevisionConfig.image_grid_pinpoints]
    hf["text_config"] = {"model_type": "qwen2", **(hf.get("text_config") or {})}
    if not hf.get("vision_config"):
        raise ValueError("a LLaVA-OneVision config.json needs its vision_config (the SigLIP tower's sizes)")
    return hf


def onevision_config(hf):
    hf = with_defaults(hf)
    base = llava_next_config(hf)
    return LlavaOnevisionConfig(**{**base.__dict__, "video_token_index": hf["video_token_index"],
                                   "vision_aspect_ratio": hf["vision_aspect_ratio"]})


register("LlavaOnevisionForConditionalGeneration")(Family(
    name="llava_onevision",
    build=lambda hf: LlavaOnevisionForConditionalGeneration(onevision_config(hf)),
    keymap=lambda hf: llava_keymap(with_defaults(hf)) + NEWLINE,
))
