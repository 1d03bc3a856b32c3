"""LLaVA-OneVision's image processor: LLaVA-NeXT's tiles, plus the several-image rule, equal to HF's
PIL-backend LlavaOnevisionImageProcessor.

    images: one image, a list (one image per prompt) or a list of lists (the images of each prompt)
    an image alone in its prompt  -> NeXT's tiles: base + anyres tiles of the best pinpoint
    an image among several        -> padded to a square with the mean colour (int(mean * 255), as
                                     LLaVA's expand2square), then one tile
    -> pixel_values (I, max tiles, 3, t, t), image_sizes (I, 2) = originals, batch_num_images (prompts,)

The model reads the same rule from batch_num_images (models/llava_onevision.py tiled_flags).
"""
from dataclasses import dataclass

from .image import expand_to_square, mean_colour
from .llava_next import DEFAULTS as NEXT_DEFAULTS
from .llava_next import LlavaNextImageProcessor
from .processors import CONFIG_FIELDS

# HF LlavaOnevisionImageProcessor's default pinpoints: 1..6 tiles of 384 px along each side.
ONEVISION_PINPOINTS = tuple((384 * r, 384 * c) for r in range(1, 7) for c in range(1, 7))


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
