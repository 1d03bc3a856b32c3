"""ImageProcessor: the ops of image.py in HF's order, switched on and off by HF's config fields.

One class covers ViT, SigLIP, BLIP (resize to a fixed size), CLIP (shortest edge + centre crop) and
LLaVA (optionally expand-to-square with the mean colour first); the per-model defaults below are
those of HF's PIL-backend classes, used when a preprocessor_config.json leaves a field out.

    file -> load_image -> to_rgb -> [clamp_pixels] -> [expand_to_square] -> resize -> [center_crop]
         -> rescale_and_normalize -> pixel_values (B, 3, H, W)
"""
from dataclasses import dataclass, field

import numpy as np
import torch

from .image import (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
                    center_crop, clamp_pixels, expand_to_square, load_image, mean_colour, resize,
                    resize_shortest_edge, rescale_and_normalize, to_rgb)

SIZE_KEYS = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"})


def size_dict(size, default_to_square, what="size"):
    """HF's size forms -> a dict: an int means a square when default_to_square, else the shortest edge
    (HF's get_size_dict); (h, w) pairs and dicts pass through, checked."""
    if isinstance(size, int):
        size = {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        size = {"height": size[0], "width": size[1]}
    if not isinstance(size, dict) or set(size) not in SIZE_KEYS:
        raise ValueError(f"{what} must be an int, (height, width) or a dict with keys "
                         f"{' or '.join(str(sorted(k)) for k in SIZE_KEYS)}; got {size!r}")
    for key, value in size.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{what}[{key!r}] must be a positive integer, got {value!r}")
    return dict(size)


@dataclass
class ImageProcessor:
    """HF's image-processor fields, same names and meaning; min_pixels/max_pixels are minivlm's own
    optional clamp (see image.clamp_size), applied before everything else when set."""
    size: dict = field(default_factory=lambda: {"height": 224, "width": 224})
    resample: int = 2
    do_resize: bool = True
    do_center_crop: bool = False
    crop_size: dict = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple = IMAGENET_STANDARD_MEAN
    image_std: tuple = IMAGENET_STANDARD_STD
    do_convert_rgb: bool = True
    do_pad: bool = False  # LLaVA's expand-to-square with the mean colour, before resizing
    min_pixels: int = None
    max_pixels: int = None
    default_to_square: bool = True  # how an int `size` reads (HF's per-class default)

    def __post_init__(self):
        self.size = size_dict(self.size, self.default_to_square)
        if self.do_center_crop:
            if self.crop_size is None:
                raise ValueError("do_center_crop=True needs crop_size")
            self.crop_size = size_dict(self.crop_size, True, "crop_size")
            if set(self.crop_size) != {"height", "width"}:
                raise ValueError(f"crop_size must give height and width, got {self.crop_size}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            setattr(self, name, (float(value),) * 3 if isinstance(value, (int, float)) else tuple(value))
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std}")

    # The steps, each on one PIL image, so a notebook can call them one by one.
    def prepare(self, image):
        """Load and convert to RGB (or insist on RGB when do_convert_rgb is off, as HF would fail later)."""
        image = load_image(image)
        if self.do_convert_rgb:
            return to_rgb(image)
        if image.mode != "RGB":
            raise ValueError(f"image mode {image.mode} is not RGB and do_convert_rgb is off; "
                             f"convert it or set do_convert_rgb=True")
        return image

    def geometry(self, image):
        """clamp -> pad to square -> resize -> centre crop, all on the 8-bit RGB image."""
        if self.min_pixels is not None or self.max_pixels is not None:
            image = clamp_pixels(image, self.min_pixels, self.max_pixels, self.resample)
        if self.do_pad:
            image = expand_to_square(image, mean_colour(self.image_mean) if self.image_mean else (0, 0, 0))
        if self.do_resize:
            if "shortest_edge" in self.size:
                image = resize_shortest_edge(image, self.size["shortest_edge"], self.size.get("longest_edge"),
                                             self.resample)
            else:
                image = resize(image, self.size["height"], self.size["width"], self.resample)
        if self.do_center_crop:
            image = center_crop(image, self.crop_size["height"], self.crop_size["width"])
        return image

    def to_array(self, image):
        """(H, W, 3) uint8 image -> (3, H, W) float32, rescaled and normalised as configured."""
        return rescale_and_normalize(image, self.rescale_factor if self.do_rescale else 1.0,
                                     self.image_mean if self.do_normalize else None, self.image_std)

    def preprocess_one(self, image):
        return self.to_array(self.geometry(self.prepare(image)))  # (3, H, W)

    def __call__(self, images, return_tensors="pt"):
        """One image or a list -> {"pixel_values": (B, 3, H, W)} (a torch tensor, or numpy with "np")."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("no images given: expected an image or a non-empty list of images")
        arrays = [self.preprocess_one(im) for im in images]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"images came out with different shapes {sorted(shapes)}; set a fixed size or "
                             f"a crop so they can be stacked")
        batch = np.stack(arrays)  # (B, 3, H, W)
        if return_tensors == "pt":
            return {"pixel_values": torch.from_numpy(batch)}
        if return_tensors in ("np", None):
            return {"pixel_values": batch}
        raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")


# HF's PIL-backend class defaults (transformers 5.23), used for fields a config leaves out.
CLIP_DEFAULTS = dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                     resample=3, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD, default_to_square=False)
DEFAULTS = {
    "ViTImageProcessor": dict(resample=2, do_convert_rgb=False),  # ViT does no RGB conversion in HF
    "SiglipImageProcessor": dict(resample=3, default_to_square=False),
    "BlipImageProcessor": dict(size={"height": 384, "width": 384}, resample=3, image_mean=OPENAI_CLIP_MEAN,
                               image_std=OPENAI_CLIP_STD),
    "CLIPImageProcessor": CLIP_DEFAULTS,
    "LlavaImageProcessor": CLIP_DEFAULTS,
}
CONFIG_FIELDS = ("size", "resample", "do_resize", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                 "do_normalize", "image_mean", "image_std", "do_convert_rgb", "do_pad")


def processor_from_config(kind, config):
    """An ImageProcessor for HF image_processor_type `kind` from a preprocessor_config dict."""
    if kind not in DEFAULTS:
        raise ValueError(f"unsupported image processor {kind!r}; supported: {', '.join(sorted(DEFAULTS))}")
    kwargs = dict(DEFAULTS[kind])
    # HF ignores None in a config (the class default applies), so do we.
    kwargs.update({k: config[k] for k in CONFIG_FIELDS if config.get(k) is not None})
    if kind != "LlavaImageProcessor":
        # Elsewhere HF's do_pad pads a batch to its largest image: a no-op on equal-sized outputs, and
        # unequal ones make __call__ raise. Only LLaVA's do_pad is the expand-to-square step.
        kwargs.pop("do_pad", None)
    return ImageProcessor(**kwargs)


