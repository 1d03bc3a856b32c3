"""Which trace module follows which model: `--model NAME` -> (module in minivlm/trace/, variant), and
a checkpoint's config.json architecture -> NAME.

A module is one family's trace. It lists its stages by calling the model's own parts in order and
captures the matching tensors from transformers; it exposes
    TITLE                         the name the table's header uses
    SHIPPED                       {variant: folder name in minivlm/pretrained} for a trained default
    write_tiny(folder, variant)   config.json (+ tokenizer, preprocessor) of its seeded tiny default
    sample(variant, image, prompt, shipped) -> Sample
    trace(loaded, sample, max_new_tokens) -> [Stage]
    reference(loaded, sample, max_new_tokens, stages) -> {stage name: tensor}
"""
import importlib
from dataclasses import dataclass

from ..errors import UsageError

MODELS = {
    "vit": ("vision", "vit"), "clip": ("vision", "clip"), "siglip": ("vision", "siglip"),
    "blip": ("blip", "caption"), "blip_itm": ("blip", "itm"),
    "blip2": ("blip2", "blip2"), "instructblip": ("blip2", "instructblip"),
    "llama": ("text", "llama"), "mistral": ("text", "mistral"), "qwen2": ("text", "qwen2"), "opt": ("text", "opt"),
    "llava": ("llava", None),
    "llava_next": ("llava_next", "clip"), "llava_next_siglip": ("llava_next", "siglip"),
    "llava_onevision": ("llava_next", "onevision"), "llava_onevision_images": ("onevision", "images"),
    "llava_onevision_video": ("onevision", "video"),
    "qwen2_vl": ("qwen2_vl", "2"), "qwen2_5_vl": ("qwen2_vl", "2.5"),
    "qwen2_vl_video": ("qwen2_vl", "2-video"), "qwen2_5_vl_video": ("qwen2_vl", "2.5-video"),
}

ARCHITECTURES = {
    "ViTModel": "vit", "ViTForImageClassification": "vit", "CLIPModel": "clip", "SiglipModel": "siglip",
    "BlipForConditionalGeneration": "blip", "BlipForImageTextRetrieval": "blip_itm",
    "Blip2ForConditionalGeneration": "blip2", "InstructBlipForConditionalGeneration": "instructblip",
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2", "OPTForCausalLM": "opt",
    "LlavaForConditionalGeneration": "llava", "LlavaNextForConditionalGeneration": "llava_next",
    "LlavaOnevisionForConditionalGeneration": "llava_onevision",
    "Qwen2VLForConditionalGeneration": "qwen2_vl", "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
}


@dataclass
class Sample:
    """What goes in: an image (a file, a PIL image, or None for the family's default), how the table
    names it, the prompt, and the true answer where the sample has one."""
    image: object = None
    image_name: str = None
    prompt: str = None
    truth: str = None


@dataclass
class Loaded:
    """A model ready to trace: ours, transformers' (or None), the folder both came from."""
    ours: object
    reference: object
    folder: str
    variant: str = None


def family(model: str):
    """(trace module, variant) for a --model name."""
    if model not in MODELS:
        raise UsageError(f"no trace for model {model!r}; known: {', '.join(MODELS)}")
    module, variant = MODELS[model]
    return importlib.import_module(f"minivlm.trace.{module}"), variant


def model_of_config(config: dict, folder="<config>") -> str:
    """The --model name a checkpoint's config.json stands for."""
    arch = (config.get("architectures") or [None])[0]
    if arch not in ARCHITECTURES:
        raise UsageError(f"config.json in {folder} names architecture {arch!r}; the trace knows "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch]
