"""LLaVA-NeXT's image processor: one image -> a stack of tiles (base tile first), equal to HF's
PIL-backend LlavaNextImageProcessor.

    image (h, w) -> RGB -> best pinpoint (H, W) -> resize_and_pad -> tiles of crop_size, row by row
                 -> base tile: the whole image squashed to the tile size, put in front
    every tile  -> [resize (shortest edge / fixed)] -> [centre crop] -> rescale, normalise
    batch       -> pixel_values (B, max_tiles, 3, t, t), short stacks padded with zero tiles (do_pad),
                   image_sizes (B, 2) = each original (height, width)

The geometry is minivlm.processing.anyres; the per-tile steps are image.py's.
"""
from dataclasses import dataclass

import numpy as np
import torch

from .anyres import divide_into_tiles, resize_and_pad, select_best_resolution
from .image import center_crop, resize, resize_shortest_edge
from .processors import CLIP_DEFAULTS, CONFIG_FIELDS, ImageProcessor

# HF's LlavaNextImageProcessor class default (the llava-v1.6 hub configs store the same list).
DEFAULT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


@dataclass
class LlavaNextImageProcessor(ImageProcessor):
    """ImageProcessor's fields, plus image_grid_pinpoints. Here do_pad means HF's LLaVA-NeXT meaning:
    pad the tile dimension across the batch (not LLaVA's expand-to-square)."""
    image_grid_pinpoints: tuple = DEFAULT_PINPOINTS

    def __post_init__(self):
        super().__post_init__()
        pins = self.image_grid_pinpoints
        if not pins or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in pins):
            raise ValueError(f"image_grid_pinpoints must be a non-empty list of [height, width], got {pins!r}")
        self.image_grid_pinpoints = tuple(tuple(int(v) for v in p) for p in pins)

    @property
    def base_size(self):
        """The base tile's (height, width): size's height/width, or shortest_edge squared (HF)."""
        s = self.size
        return (s["height"], s["width"]) if "height" in s else (s["shortest_edge"],) * 2

    @property
    def tile_size(self):
        """The side tiles are cut at: crop_size's height, else size's (HF's patch_size)."""
        if self.crop_size:
            return self.crop_size["height"]
        return self.size.get("height", self.size.get("shortest_edge"))

    def tiles(self, image):
        """RGB PIL image -> [base, tile_1, ..., tile_k] as PIL images, before the per-tile steps."""
        best = select_best_resolution((image.height, image.width), self.image_grid_pinpoints)
        canvas = resize_and_pad(image, best, self.resample)
        base = resize(image, *self.base_size, self.resample)
        return [base] + divide_into_tiles(canvas, self.tile_size)

    def tile_steps(self, tile):
        """One tile -> (3, t, t) float32: resize, centre crop, rescale, normalise (each if switched on)."""
        if self.do_resize:
            if "shortest_edge" in self.size:
                tile = resize_shortest_edge(tile, self.size["shortest_edge"], resample=self.resample)
            else:
                tile = resize(tile, self.size["height"], self.size["width"], self.resample)
        if self.do_center_crop:
            tile = center_crop(tile, self.crop_size["height"], self.crop_size["width"])
        return self.to_array(tile)

    def preprocess_one(self, image):
        """One image -> (tiles, 3, t, t) float32 and its original (height, width)."""
        image = self.prepare(image)
        return np.stack([self.tile_steps(t) for t in self.tiles(image)]), (image.height, image.width)

    def __call__(self, images, return_tensors="pt"):
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("no images given: expected an image or a non-empty list of images")
        stacks, sizes = zip(*(self.preprocess_one(im) for im in images))
        return self.batch(stacks, sizes, return_tensors)

    def batch(self, stacks, sizes, return_tensors="pt", **extra):
        """Tile stacks (k_i, 3, t, t) and original sizes -> pixel_values (B, max k, 3, t, t), image_sizes
        (B, 2) (+ `extra` integer lists, e.g. OneVision's batch_num_images), as tensors or arrays."""
        most = max(len(s) for s in stacks)
        if self.do_pad:  # HF's _pad_for_batching: zero tiles after the real ones
            stacks = [np.concatenate([s, np.zeros((most - len(s),) + s.shape[1:], s.dtype)]) for s in stacks]
        elif len({s.shape for s in stacks}) > 1:
            raise ValueError(f"images gave different tile stacks {sorted({s.shape for s in stacks})} and do_pad "
                             f"is off; set do_pad=True to pad them to {most} tiles")
        batch, image_sizes = np.stack(stacks), np.array(sizes, dtype=np.int64)  # (B, T, 3, t, t), (B, 2)
        out = {"pixel_values": batch, "image_sizes": image_sizes,
               **{k: np.array(v, dtype=np.int64) for k, v in extra.items()}}
        if return_tensors == "pt":
            return {k: torch.from_numpy(v) for k, v in out.items()}
        if return_tensors in ("np", None):
            return out
        raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")


# HF's PIL-backend LlavaNextImageProcessor defaults (transformers 5.23).
DEFAULTS = dict(CLIP_DEFAULTS, do_pad=True)


def llava_next_processor_from_config(config):
    """A LlavaNextImageProcessor from a preprocessor_config dict (HF ignores None fields, so do we)."""
    kwargs = dict(DEFAULTS)
    kwargs.update({k: config[k] for k in CONFIG_FIELDS + ("image_grid_pinpoints",) if config.get(k) is not None})
    return LlavaNextImageProcessor(**kwargs)
