"""LlavaNextForConditionalGeneration checkpoints (llava-hf/llava-v1.6-*): LLaVA's key map plus the
image_newline vector, stored as `image_newline` (hub files and transformers 5's save_pretrained) or
`model.image_newline` (transformers 5's in-memory state_dict)."""
from minivlm.models.llava_next import LlavaNextConfig, LlavaNextForConditionalGeneration

from ..engine import KeyMap, Rule
from ..registry import Family, register
from .llava import llava_config, llava_keymap

NEWLINE = KeyMap([Rule("image_newline", "image_newline"), Rule("model.image_newline", "image_newline")])


def llava_next_config(hf):
    base = llava_config(hf)
    pinpoints = hf.get("image_grid_pinpoints") or LlavaNextConfig.image_grid_pinpoints
    return LlavaNextConfig(**{**base.__dict__, "image_grid_pinpoints": tuple(tuple(p) for p in pinpoints)})


register("LlavaNextForConditionalGeneration")(Family(
    name="llava_next",
    build=lambda hf: LlavaNextForConditionalGeneration(llava_next_config(hf)),
    keymap=lambda hf: llava_keymap(hf) + NEWLINE,
))
