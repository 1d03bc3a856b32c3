"""LLaVA-OneVision's image processor: LLaVA-NeXT's tiles, plus the several-image rule, equal to HF's
PIL-backend LlavaOnevisionImageProcessor.

    images: one image, a list (one image per prompt) or a list of lists (the images of each prompt)
    an image alone in its prompt  -> NeXT's tiles: base + anyres tiles of the best pinpoint
    an image among several        -> padded to a square with the mean colour (int(mean * 255), as
                                     LLaVA's expand2square), then one tile
    -> pixel_values (I, max tiles, 3, t, t), image_sizes (I, 2) = originals, batch_num_images (prompts,)

The model reads the same rule from batch_num_images (models/llava_onevision.py tiled_flags), and
counts its features with the functions below, which the processor uses to write the prompt's
<image> / <video> runs (processing/processor.py): one count, two callers.
"""
import math
import re
from dataclasses import dataclass

from .anyres import grid_shape, unpad_bounds
from .image import expand_to_square, mean_colour
from .llava_next import DEFAULTS as NEXT_DEFAULTS
from .llava_next import LlavaNextImageProcessor
from .processors import CONFIG_FIELDS

# HF LlavaOnevisionImageProcessor's default pinpoints: 1..6 tiles of 384 px along each side.
ONEVISION_PINPOINTS = tuple((384 * r, 384 * c) for r in range(1, 7) for c in range(1, 7))


def max_tiles_of(vision_aspect_ratio):
    """'anyres_max_9' -> 9: how many base tiles' worth of features the unpadded grid may keep."""
    match = re.fullmatch(r"anyres_max_(\d+)", str(vision_aspect_ratio))
    if not match:
        raise ValueError(f"vision_aspect_ratio must be 'anyres_max_<N>' (e.g. 'anyres_max_9'), "
                         f"got {vision_aspect_ratio!r}")
    return int(match.group(1))


def shrunk_size(rows, cols, patches_per_side, max_tiles):
    """The unpadded grid's (rows, cols) after OneVision's shrink: with
    ratio = sqrt(rows * cols / (max_tiles * n^2)), a grid with ratio > 1.1 becomes
    (int(rows // ratio), int(cols // ratio)) — the reference's rule (pack_image_features), the 1.1
    letting grids just over the budget through unchanged."""
    ratio = math.sqrt(rows * cols / (max_tiles * patches_per_side ** 2))
    if ratio > 1.1:
        return int(rows // ratio), int(cols // ratio)
    return rows, cols


def onevision_image_tokens(image_size, geometry, max_tiles, tiled=True):
    """How many <image> tokens one image becomes: base tile + (shrunk) unpadded grid with a newline
    per row; an image of a several-image prompt (tiled=False) is its base tile + one newline."""
    n = geometry.patches_per_side
    if not tiled:
        return geometry.tokens_per_tile + 1
    rows, cols = grid_shape(image_size, geometry)
    r0, r1, c0, c1 = unpad_bounds(image_size, (rows * n, cols * n))
    h, w = shrunk_size(r1 - r0, c1 - c0, n, max_tiles)
    return geometry.tokens_per_tile + h * (w + 1)


def video_tokens(num_frames, patches_per_side):
    """<video> tokens of one video: ceil(n/2)^2 pooled features per frame, + one newline at the end."""
    return num_frames * math.ceil(patches_per_side / 2) ** 2 + 1


def images_per_prompt(images):
    """HF's reading of the input nesting -> (flat list of images, batch_num_images). Empty inner lists
    (text-only prompts) are dropped, as HF drops them."""
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], (list, tuple)):
        nested = [list(x) for x in images if x]
        return [im for prompt in nested for im in prompt], [len(x) for x in nested]
    flat = list(images) if isinstance(images, (list, tuple)) else [images]
    return flat, [1] * len(flat)


@dataclass
class LlavaOnevisionImageProcessor(LlavaNextImageProcessor):
    image_grid_pinpoints: tuple = ONEVISION_PINPOINTS

    def preprocess_alone(self, image):
        """An image among several in its prompt -> (1, 3, t, t): square with the mean colour, one tile."""
        image = self.prepare(image)
        square = expand_to_square(image, mean_colour(self.image_mean))
        return self.tile_steps(square)[None], (image.height, image.width)

    def __call__(self, images, return_tensors="pt"):
        flat, batch_num_images = images_per_prompt(images)
        if not flat:
            raise ValueError("no images given: expected an image, a list of images or a list of lists")
        tiled = [n == 1 for n in batch_num_images for _ in range(n)]
        stacks, sizes = zip(*(self.preprocess_one(im) if t else self.preprocess_alone(im)
                              for im, t in zip(flat, tiled)))
        return self.batch(stacks, sizes, return_tensors, batch_num_images=batch_num_images)


# HF's PIL-backend LlavaOnevisionImageProcessor defaults (transformers 5.23): 384 x 384, no crop.
DEFAULTS = dict(NEXT_DEFAULTS, size={"height": 384, "width": 384}, do_center_crop=False, crop_size=None)


def onevision_processor_from_config(config):
    kwargs = dict(DEFAULTS)
    kwargs.update({k: config[k] for k in CONFIG_FIELDS + ("image_grid_pinpoints",) if config.get(k) is not None})
    return LlavaOnevisionImageProcessor(**kwargs)
