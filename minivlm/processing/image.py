"""Image ops: file -> RGB -> (clamped / padded square) -> resized -> cropped -> normalised array.

Each step is a small function on a PIL image (or, at the end, a float array), so a notebook can show
the picture after every step. `processors.ImageProcessor` strings them together the way HF's
PIL-backend processors do (the reference here): every geometric step works on the 8-bit RGB image
with PIL's own filters, then x / 255 (in float64, cast to float32), then (x - mean) / std per channel.
"""
import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# PIL filters by the integer codes HF configs store under "resample".
RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC, 4: Image.BOX, 5: Image.HAMMING}

IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def load_image(source):
    """A path, a PIL image or a uint8 (H, W) / (H, W, C) array -> a PIL image, with clear errors."""
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
            raise ValueError(f"an image array must be uint8 (H, W) or (H, W, C) with C in 1, 3, 4; "
                             f"got {source.dtype} {source.shape}")
        check_size(source.shape[0], source.shape[1])
        image = Image.fromarray(source[..., 0] if source.ndim == 3 and source.shape[2] == 1 else source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"cannot read {path} as an image: {e}") from None
    else:
        raise TypeError(f"expected an image path, PIL image or uint8 array, got {type(source).__name__}")
    check_size(image.height, image.width)
    return image


def check_size(height, width, what="image"):
    if not (isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer))) or height < 1 or width < 1:
        raise ValueError(f"cannot make an {what} of {height}x{width} (height x width): "
                         f"both sides must be integers of at least 1 pixel")


def to_rgb(image):
    """Any PIL mode -> RGB, as HF's convert_to_rgb does it.

    Anything with an alpha band (RGBA, LA, PA) or a `transparency` entry (P, L or RGB PNGs with tRNS)
    is composited onto white; every other mode goes through PIL's convert("RGB"). Beware: PIL clips
    16-bit and 32-bit greyscale (I;16, I) to 0..255 rather than scaling, so a 16-bit scan comes out
    mostly white. HF does the same and parity is the promise, so we keep it; scale such images to
    8 bits yourself first if that is not what you want.
    """
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize(image, height, width, resample=2):
    """PIL resize to (height, width) with HF's integer filter code (2 = bilinear, 3 = bicubic)."""
    check_size(height, width, "output size")
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)} (PIL filter codes), got {resample!r}")
    return image.resize((width, height), RESAMPLE[resample])


def shortest_edge_size(height, width, shortest_edge, longest_edge=None):
    """The (height, width) that brings the shorter side to `shortest_edge`, keeping the aspect ratio.

    Mirrors HF (after torchvision): the longer side is int(shortest_edge * long / short), truncated,
    not rounded. With `longest_edge` too (HF's {"shortest_edge", "longest_edge"} size), the target
    shrinks so the longer side stays within it (HF's get_size_with_aspect_ratio, DETR's rule).
    """
    check_size(height, width)
    if shortest_edge < 1:
        raise ValueError(f"shortest_edge must be at least 1, got {shortest_edge}")
    if longest_edge is None:
        short, long = min(height, width), max(height, width)
        new_short, new_long = shortest_edge, int(shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    size, raw = shortest_edge, None
    if max(height, width) / min(height, width) * size > longest_edge:
        raw = longest_edge * min(height, width) / max(height, width)
        size = int(round(raw))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    scale = raw if raw is not None else size
    if width < height:
        return int(scale * height / width), size
    return size, int(scale * width / height)


def resize_shortest_edge(image, shortest_edge, longest_edge=None, resample=2):
    """CLIP's first step: scale so the shorter side is `shortest_edge` (aspect ratio kept)."""
    return resize(image, *shortest_edge_size(image.height, image.width, shortest_edge, longest_edge), resample)


def center_crop(image, height, width):
    """Cut the central (height, width) window; where the window is larger than the image, the
    outside is black (zeros), as HF's center_crop pads.

    HF's offsets: top = (H - height) // 2, left = (W - width) // 2 (floor, also when negative), so an
    odd surplus leaves the extra row/column at the bottom/right. PIL's crop with that box fills
    out-of-image pixels with zeros, which is exactly HF's pad-then-crop.
    """
    check_size(height, width, "crop")
    top, left = (image.height - height) // 2, (image.width - width) // 2
    return image.crop((left, top, left + width, top + height))


def expand_to_square(image, background=(0, 0, 0)):
    """LLaVA's pad mode (expand2square in the LLaVA repo, do_pad in HF's LlavaImageProcessor):
    pad the shorter side to make a square, image centred (offset (long - short) // 2), padding filled
    with `background` — LLaVA passes the processor's mean colour, int(mean * 255) per channel."""
    if image.width == image.height:
        return image
    side = max(image.width, image.height)
    square = Image.new(image.mode, (side, side), tuple(background))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square


def mean_colour(image_mean):
    """The 8-bit padding colour LLaVA derives from the normalisation mean (truncated, as LLaVA does)."""
    return tuple(int(m * 255) for m in image_mean)


def clamp_size(height, width, min_pixels=None, max_pixels=None):
    """The (height, width) with height * width inside [min_pixels, max_pixels], aspect ratio kept.

    Our definition (the `process_image` clamp of RL pipelines such as verl, made exact):
    - within the range: unchanged;
    - too many pixels: scale both sides by s = sqrt(max_pixels / (H * W)) and round DOWN, so the
      result never exceeds max_pixels; if a side hit the 1-pixel floor and the product still exceeds
      it, the longer side is cut to max_pixels // shorter;
    - too few pixels: scale by s = sqrt(min_pixels / (H * W)) and round UP, so it never falls short.
      If rounding up overshoots max_pixels, the longer side is cut back as above; should that fall
      below min_pixels, no size with this aspect ratio fits and we raise.
    """
    check_size(height, width)
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    pixels = height * width
    if max_pixels is not None and pixels > max_pixels:
        s = math.sqrt(max_pixels / pixels)
        # The epsilon keeps an exact ratio (s = 0.5) from flooring a hair too low.
        height, width = max(1, math.floor(height * s + 1e-9)), max(1, math.floor(width * s + 1e-9))
    elif min_pixels is not None and pixels < min_pixels:
        s = math.sqrt(min_pixels / pixels)
        height, width = math.ceil(height * s - 1e-9), math.ceil(width * s - 1e-9)
    if max_pixels is not None and height * width > max_pixels:
        if height >= width:
            height = max_pixels // width
        else:
            width = max_pixels // height
    if min_pixels is not None and height * width < min_pixels:
        raise ValueError(f"no size with the aspect ratio of {height}x{width} has between {min_pixels} "
                         f"and {max_pixels} pixels")
    return height, width


def clamp_pixels(image, min_pixels=None, max_pixels=None, resample=3):
    """Resize (only if needed) so the pixel count lies in [min_pixels, max_pixels]; see clamp_size."""
    height, width = clamp_size(image.height, image.width, min_pixels, max_pixels)
    if (height, width) == (image.height, image.width):
        return image
    return resize(image, height, width, resample)


def rescale_and_normalize(image, scale=1 / 255, mean=None, std=None):
    """PIL RGB (H, W, 3) -> float32 array (3, H, W): x * scale, then (x - mean) / std per channel.

    The rescale runs in float64 and is cast once, and the normalisation in float32, as HF does, so
    the numbers are the same to the bit."""
    x = (np.asarray(image).transpose(2, 0, 1).astype(np.float64) * scale).astype(np.float32)  # (3, H, W)
    if mean is not None:
        if len(mean) != x.shape[0] or len(std) != x.shape[0]:
            raise ValueError(f"image_mean and image_std need {x.shape[0]} values, got {mean} and {std}")
        x = (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    return x
