"""load_image_processor: preprocessor_config.json -> a minivlm ImageProcessor.

Dispatches on image_processor_type (what transformers 5 writes: the PIL class name without "Pil"),
or on an old hub config's feature_extractor_type ("CLIPFeatureExtractor" -> CLIPImageProcessor).
The processors themselves live in minivlm/processing/processors.py.
"""
import json
from pathlib import Path

from minivlm.processing.llava_next import llava_next_processor_from_config
from minivlm.processing.llava_onevision import onevision_processor_from_config
from minivlm.processing.processors import DEFAULTS, processor_from_config
from minivlm.processing.qwen2_vl import qwen2_vl_processor_from_config

from .errors import CheckpointError, MissingConfigError

# Every type minivlm reads; each maps to a set of HF class defaults in minivlm.processing.processors.
# Types with a processor class of their own: type -> (config dict -> processor).
SPECIAL = {"LlavaNextImageProcessor": llava_next_processor_from_config,
           "LlavaOnevisionImageProcessor": onevision_processor_from_config,
           "Qwen2VLImageProcessor": qwen2_vl_processor_from_config}
PROCESSORS = sorted(list(DEFAULTS) + list(SPECIAL))


def processor_type(cfg):
    kind = cfg.get("image_processor_type") or cfg.get("feature_extractor_type") or ""
    kind = kind.replace("FeatureExtractor", "ImageProcessor")
    return kind[:-3] if kind.endswith("Pil") else kind.removesuffix("Fast")


def load_image_processor(folder):
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        raise MissingConfigError(f"no preprocessor_config.json in {folder}")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    kind = processor_type(cfg)
    if kind not in PROCESSORS:
        raise CheckpointError(f"image_processor_type {kind or None!r} in {path} is not supported; "
                              f"supported: {', '.join(PROCESSORS)}")
    try:
        return SPECIAL[kind](cfg) if kind in SPECIAL else processor_from_config(kind, cfg)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
