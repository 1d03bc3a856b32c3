"""Image preprocessing: file -> RGB -> resized -> rescaled and normalised pixel_values.

Each step is a small function on a PIL image or a float array, so a notebook can show the image
after every step. `ImageProcessor` strings them together the way HF's PIL-backend processors do
(the reference here): resizing happens on the 8-bit PIL image with PIL's own filters, then
x / 255, then (x - mean) / std per channel.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# PIL filters by the integer codes HF configs store under "resample".
RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC, 4: Image.BOX, 5: Image.HAMMING}

IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)


def load_image(source):
    """A path, a PIL image or an (H, W, 3) uint8 array -> a PIL image, with clear errors."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ValueError(f"an image array must be uint8 (H, W) or (H, W, C), got {source.dtype} {source.shape}")
        return Image.fromarray(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read {path} as an image: {e}") from None
        return image
    raise TypeError(f"expected an image path, PIL image or uint8 array, got {type(source).__name__}")


def to_rgb(image):
    """Any PIL mode -> RGB. Transparent pixels are composited on white (HF's convert_rgb does the same)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def check_size(height, width, what="image"):
    if height < 1 or width < 1:
        raise ValueError(f"cannot process an {what} of {height}x{width}: both sides must be at least 1 pixel")


def resize(image, height, width, resample=2):
    """PIL resize to (height, width) with HF's integer filter code (2 = bilinear, 3 = bicubic)."""
    check_size(height, width, "output size")
    return image.resize((width, height), RESAMPLE[resample])


def rescale_and_normalize(image, scale=1 / 255, mean=None, std=None):
    """PIL RGB (H, W, 3) -> float32 array (3, H, W), x * scale then (x - mean) / std per channel."""
    x = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) * np.float32(scale)
    if mean is not None:
        x = (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    return x


@dataclass
class ImageProcessor:
    """Resize to a fixed (height, width), rescale, normalise: ViT's and SigLIP's recipe."""
    size: dict = field(default_factory=lambda: {"height": 224, "width": 224})
    resample: int = 2
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple = IMAGENET_STANDARD_MEAN
    image_std: tuple = IMAGENET_STANDARD_STD
    do_convert_rgb: bool = True

    def preprocess_one(self, image):
        image = load_image(image)
        check_size(image.height, image.width)
        if self.do_convert_rgb:
            image = to_rgb(image)
        elif image.mode != "RGB":
            raise ValueError(f"image mode {image.mode} needs do_convert_rgb=True")
        if self.do_resize:
            image = resize(image, self.size["height"], self.size["width"], self.resample)
        x = rescale_and_normalize(image, self.rescale_factor if self.do_rescale else 1.0,
                                  self.image_mean if self.do_normalize else None, self.image_std)
        return torch.from_numpy(x)

    def __call__(self, images, return_tensors="pt"):
        images = images if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("no images given")
        return {"pixel_values": torch.stack([self.preprocess_one(im) for im in images])}  # (B, 3, H, W)
