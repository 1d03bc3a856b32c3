"""load_image_processor: preprocessor_config.json -> a minivlm image processor.

Dispatches on image_processor_type; each family's processor lives in minivlm/processing.
"""
import json
from pathlib import Path

from minivlm.processing.image import ImageProcessor

from .errors import CheckpointError, MissingConfigError

FIELDS = ("resample", "do_resize", "do_rescale", "rescale_factor", "do_normalize", "image_mean",
          "image_std", "do_convert_rgb")


def fixed_size_processor(cfg):
    size = cfg.get("size", {"height": 224, "width": 224})
    if isinstance(size, int):
        size = {"height": size, "width": size}
    if set(size) != {"height", "width"}:
        raise CheckpointError(f"{cfg.get('image_processor_type')} needs size with height and width, got {size}")
    kwargs = {k: cfg[k] for k in FIELDS if cfg.get(k) is not None}
    return ImageProcessor(size=dict(size), **kwargs)


PROCESSORS = {
    "ViTImageProcessor": fixed_size_processor,
}


def load_image_processor(folder):
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        raise MissingConfigError(f"no preprocessor_config.json in {folder}")
    cfg = json.loads(path.read_text())
    kind = cfg.get("image_processor_type", "")
    kind = kind[:-3] if kind.endswith("Pil") else kind.removesuffix("Fast")
    if kind not in PROCESSORS:
        raise CheckpointError(f"image_processor_type {cfg.get('image_processor_type')!r} in {path} is not "
                              f"supported; supported: {', '.join(sorted(PROCESSORS))}")
    return PROCESSORS[kind](cfg)
