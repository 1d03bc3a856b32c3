"""load_image_processor: preprocessor_config.json -> a minivlm ImageProcessor.
load_processor: a model folder -> a minivlm Processor (tokenizer + image processor [+ video]), as
AutoProcessor reads it.

Image processors dispatch on image_processor_type (what transformers 5 writes: the PIL class name
without "Pil"), or on an old hub config's feature_extractor_type ("CLIPFeatureExtractor" ->
CLIPImageProcessor). The processors themselves live in minivlm/processing/.

Where a processor's parts live, in the two layouts a folder comes in:
    hub (llava-hf, Salesforce, Qwen)       transformers 5's save_pretrained
    processor_config.json (family fields)  processor_config.json: family fields AND the image
    preprocessor_config.json                 ("image_processor") / video ("video_processor") configs
    video_preprocessor_config.json          nested in it
    tokenizer files, qformer_tokenizer/     tokenizer files, qformer_tokenizer/ (InstructBLIP)
    chat_template.json / .jinja             chat_template.jinja
The family: processor_class in processor_config.json, preprocessor_config.json or tokenizer_config.json,
else config.json's model_type (openai/clip-* name none), as AutoProcessor falls back.
"""
import json
from pathlib import Path

from minivlm.processing.image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from minivlm.processing.llava_next import llava_next_processor_from_config
from minivlm.processing.llava_onevision import onevision_processor_from_config
from minivlm.processing.processor import FAMILIES
from minivlm.processing.processors import CONFIG_FIELDS, DEFAULTS, ImageProcessor, processor_from_config
from minivlm.processing.qwen2_vl import qwen2_vl_processor_from_config

from .errors import CheckpointError, MissingConfigError
from .tokenizers import load_tokenizer, read_json

# Every type minivlm reads; each maps to a set of HF class defaults in minivlm.processing.processors.
# Types with a processor class of their own: type -> (config dict -> processor).
SPECIAL = {"LlavaNextImageProcessor": llava_next_processor_from_config,
           "LlavaOnevisionImageProcessor": onevision_processor_from_config,
           "Qwen2VLImageProcessor": qwen2_vl_processor_from_config}
PROCESSORS = sorted(list(DEFAULTS) + list(SPECIAL))
# config.json's model_type -> processor class, when no file names one (openai/clip-* folders): AutoProcessor's map.
BY_MODEL_TYPE = {"clip": "CLIPProcessor", "siglip": "SiglipProcessor", "blip": "BlipProcessor",
                 "blip-2": "Blip2Processor", "instructblip": "InstructBlipProcessor", "llava": "LlavaProcessor",
                 "llava_next": "LlavaNextProcessor", "llava_onevision": "LlavaOnevisionProcessor",
                 "qwen2_vl": "Qwen2VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor"}
# The processor_config.json fields a family's Processor takes (HF's __init__ arguments).
FAMILY_FIELDS = ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "image_token",
                 "video_token", "num_image_tokens", "vision_aspect_ratio", "num_query_tokens")
# HF's video processors, class defaults (frames are processed as images with these fields).
ONEVISION_VIDEO = dict(size={"height": 384, "width": 384}, resample=3, image_mean=OPENAI_CLIP_MEAN,
                       image_std=OPENAI_CLIP_STD, default_to_square=False)
QWEN2_VL_VIDEO = dict(size={"shortest_edge": 128 * 28 * 28, "longest_edge": 28 * 28 * 768})


def processor_type(cfg):
    kind = cfg.get("image_processor_type") or cfg.get("feature_extractor_type") or ""
    kind = kind.replace("FeatureExtractor", "ImageProcessor")
    return kind[:-3] if kind.endswith("Pil") else kind.removesuffix("Fast")


def image_processor_from_dict(cfg, where):
    """A preprocessor config (the file's dict, or processor_config.json's "image_processor") -> processor."""
    kind = processor_type(cfg)
    if kind not in PROCESSORS:
        raise CheckpointError(f"image_processor_type {kind or None!r} in {where} is not supported; "
                              f"supported: {', '.join(PROCESSORS)}")
    try:
        return SPECIAL[kind](cfg) if kind in SPECIAL else processor_from_config(kind, cfg)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def load_image_processor(folder):
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        raise MissingConfigError(f"no preprocessor_config.json in {folder}")
    return image_processor_from_dict(read_json(path), path)


def video_processor_from_dict(kind, cfg, image_processor, where):
    """OneVision: frames as images (fixed size); Qwen2-VL: its patchifying processor at video sizes.
    No video config at all (older Qwen2-VL folders): the image processor handles videos, as it did."""
    try:
        if kind == "LlavaOnevisionProcessor":
            fields = {k: cfg[k] for k in CONFIG_FIELDS if cfg.get(k) is not None and k != "do_pad"}
            return ImageProcessor(**{**ONEVISION_VIDEO, **fields})
        if kind in ("Qwen2VLProcessor", "Qwen2_5_VLProcessor"):
            return qwen2_vl_processor_from_config({**QWEN2_VL_VIDEO, **cfg}) if cfg else image_processor
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None
    return None


def read_chat_template(folder):
    """The processor's chat template in HF's order of precedence (minivlm.processing.chat_template)."""
    try:
        from minivlm.processing.chat_template import load_chat_template
    except ImportError:  # the chat-template module is not in this tree yet
        return None
    return load_chat_template(folder, for_processor=True)


def load_processor(folder):
    """A model folder -> the family's Processor (see minivlm/processing/processor.py)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingConfigError(f"no processor folder at {folder}")
    found = {name: read_json(folder / name) for name in ("processor_config.json", "preprocessor_config.json",
                                                         "video_preprocessor_config.json", "tokenizer_config.json")
             if (folder / name).is_file()}
    config = found.get("processor_config.json", {})
    kind = next((c["processor_class"] for c in found.values() if c.get("processor_class")), None)
    if kind is None and (folder / "config.json").is_file():
        kind = BY_MODEL_TYPE.get(read_json(folder / "config.json").get("model_type"))
    if kind not in FAMILIES:
        raise CheckpointError(f"processor_class {kind!r} (read from {', '.join(found) or 'no config file'} in {folder}) "
                              f"is not supported; supported: {', '.join(sorted(FAMILIES))}")
    cls, extra = FAMILIES[kind]

    image_cfg, where = config.get("image_processor"), folder / "processor_config.json"
    if image_cfg is None:
        image_cfg, where = found.get("preprocessor_config.json"), folder / "preprocessor_config.json"
    if image_cfg is None:
        raise MissingConfigError(f"{kind} needs an image processor config: {folder} has neither "
                                 f"preprocessor_config.json nor an 'image_processor' entry in processor_config.json")
    image_processor = image_processor_from_dict(image_cfg, where)
    video_cfg = config.get("video_processor") or found.get("video_preprocessor_config.json") or {}
    video_processor = video_processor_from_dict(kind, video_cfg, image_processor, where)

    kwargs = {k: config[k] for k in FAMILY_FIELDS if config.get(k) is not None}
    if kind == "InstructBlipProcessor":
        if not (folder / "qformer_tokenizer").is_dir():
            raise MissingConfigError(f"InstructBlipProcessor needs the Q-Former's tokenizer in {folder / 'qformer_tokenizer'}")
        kwargs["qformer_tokenizer"] = load_tokenizer(folder / "qformer_tokenizer")
    try:
        return cls(load_tokenizer(folder), image_processor, video_processor=video_processor,
                   chat_template=read_chat_template(folder), **extra, **kwargs)
    except ValueError as e:
        raise CheckpointError(f"{folder}: {e}") from None
