"""LLaVA-NeXT's "anyres" geometry (Liu et al. 2024, "LLaVA-NeXT: Improved reasoning, OCR, and world
knowledge"), as small pure functions on sizes. Sizes are (height, width) everywhere.

    image (h, w)
      -> select_best_resolution: the pinpoint (H, W) that keeps most of the image's pixels
      -> resize_and_pad: scale to fit inside (H, W), aspect kept, centred on black
      -> divide_into_tiles: (H / t) x (W / t) tiles of the encoder's size t, row by row
      +  the whole image squashed to t x t: the "base" tile, first in the stack
    features: each tile -> (t / p)^2 patch features; the tiles are laid back into one grid of
      (rows * t/p) x (cols * t/p) features, the rows/columns that only saw padding are cut
      (unpad_bounds), an image_newline token ends every row, the base features go in front.

`num_image_tokens` counts that sequence (`tokens_per_image` counts a plain LLaVA image, one tile).
The processor (prompt building) and the model (feature merging) both call them and `unpad_bounds`,
so the two can never disagree.
"""
import math
from dataclasses import dataclass

from PIL import Image

MERGES = ("spatial_unpad", "flat")


@dataclass(frozen=True)
class AnyresGeometry:
    """What the token count depends on. tile_size: the encoder's input side (vision image_size,
    the processor's crop size); patch_size: the encoder's patch side."""
    grid_pinpoints: tuple                      # ((H, W), ...) candidate canvas sizes
    tile_size: int
    patch_size: int
    vision_feature_select_strategy: str = "default"
    merge: str = "spatial_unpad"               # or 'flat': every tile's features in a row, no unpad/newline
    class_token: bool = True                   # the tower prepends [CLS] (CLIP); SigLIP's does not

    def __post_init__(self):
        object.__setattr__(self, "grid_pinpoints", tuple(tuple(int(v) for v in p) for p in self.grid_pinpoints))
        if not self.grid_pinpoints or any(len(p) != 2 for p in self.grid_pinpoints):
            raise ValueError(f"grid_pinpoints must be a non-empty list of (height, width), got {self.grid_pinpoints}")
        for h, w in self.grid_pinpoints:
            if h % self.tile_size or w % self.tile_size:
                raise ValueError(f"grid pinpoint {(h, w)} is not a multiple of the tile size {self.tile_size}; "
                                 f"the tiles would not fill it")
        if self.patch_size > self.tile_size:
            raise ValueError(f"patch size {self.patch_size} is larger than the tile size {self.tile_size}")
        if self.merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {self.merge!r}")
        if self.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy must be 'default' or 'full', "
                             f"got {self.vision_feature_select_strategy!r}")

    @property
    def tokens_per_tile(self):
        """Features one tile gives after selection: its patches, + [CLS] if any, - the first with 'default'."""
        return tokens_per_image(self.patches_per_side ** 2, self.class_token, self.vision_feature_select_strategy)

    @property
    def patches_per_side(self):
        # Floor, as the patch conv and HF (image_size // patch_size) do: SigLIP-384/14 (OneVision) reads
        # 27 x 27 patches and never sees the last 6 pixel rows / columns of a tile.
        return self.tile_size // self.patch_size


def tokens_per_image(num_patches, class_token, strategy):
    """Features selected from one image (LLaVA) or one tile (NeXT, OneVision): 'default' drops the
    first token — [CLS] in a CLIP tower; in a tower without one (SigLIP) transformers drops the first
    *patch* all the same (LlavaModel.get_image_features slices [:, 1:] whatever the tower), and minivlm
    mirrors it. LLaVA's model (features_per_image) and processor (LlavaProcessor) both count with it."""
    return num_patches + int(class_token) - int(strategy == "default")


def _size(image_size):
    h, w = (int(v) for v in (image_size.tolist() if hasattr(image_size, "tolist") else image_size))
    if h < 1 or w < 1:
        raise ValueError(f"image size must be (height, width) of at least 1 pixel each, got {(h, w)}")
    return h, w


def select_best_resolution(image_size, grid_pinpoints):
    """The pinpoint (H, W) that shows the image at the highest effective resolution — pixels of the
    original that survive scaling to fit, int() truncated and capped at the original's count — and,
    among equals, wastes the fewest canvas pixels; earlier pinpoints win full ties (HF's rule)."""
    h, w = _size(image_size)
    best, best_key = None, None
    for ph, pw in grid_pinpoints:
        scale = min(pw / w, ph / h)
        effective = min(int(w * scale) * int(h * scale), w * h)
        key = (effective, -(ph * pw - effective))
        if best_key is None or key > best_key:
            best, best_key = (ph, pw), key
    return best


def fitted_size(image_size, target):
    """(h, w) after scaling to fit inside target (H, W), aspect kept: the side that limits is set
    exactly, the other rounded UP and capped (HF's get_patch_output_size)."""
    h, w = _size(image_size)
    th, tw = target
    sx, sy = tw / w, th / h
    if sx < sy:
        return min(math.ceil(h * sx), th), tw
    return th, min(math.ceil(w * sy), tw)


def padding_for(size, target):
    """(top, bottom, left, right) black borders that centre `size` in `target`; the odd pixel goes
    to the bottom / right (HF's divmod)."""
    top, extra_y = divmod(target[0] - size[0], 2)
    left, extra_x = divmod(target[1] - size[1], 2)
    return top, top + extra_y, left, left + extra_x


def resize_and_pad(image, target, resample=3):
    """PIL image -> the (H, W) canvas: resized to fitted_size, pasted centred on black (zeros)."""
    from .image import resize
    h, w = fitted_size((image.height, image.width), target)
    resized = resize(image, h, w, resample)
    top, _, left, _ = padding_for((h, w), target)
    canvas = Image.new(image.mode, (target[1], target[0]), 0)
    canvas.paste(resized, (left, top))
    return canvas


def divide_into_tiles(image, tile_size):
    """PIL image -> list of tile_size x tile_size crops, row by row (edge tiles clipped, as slicing)."""
    return [image.crop((x, y, min(x + tile_size, image.width), min(y + tile_size, image.height)))
            for y in range(0, image.height, tile_size) for x in range(0, image.width, tile_size)]


def grid_shape(image_size, geometry):
    """(rows, cols) of tiles for an image (HF's get_anyres_image_grid_shape, (height, width) order)."""
    ph, pw = select_best_resolution(image_size, geometry.grid_pinpoints)
    return ph // geometry.tile_size, pw // geometry.tile_size


def num_tiles(image_size, geometry):
    """Tiles the processor makes for one image: the grid plus the base tile."""
    rows, cols = grid_shape(image_size, geometry)
    return rows * cols + 1


def unpad_bounds(image_size, feature_size):
    """Rows/cols of a (rows, cols) feature grid that saw the image, not the padding: (r0, r1, c0, c1).

    The grid is treated as the padded canvas at feature resolution: the image's side along the
    looser axis becomes int(round(side * scale, 7)) features, the rest is padding split evenly and
    cut from both ends with floor division (HF's unpad_image; round(., 7) absorbs float noise)."""
    h, w = _size(image_size)
    rows, cols = feature_size
    if w / h > cols / rows:  # wider than the grid: padding above and below
        pad = (rows - int(round(h * (cols / w), 7))) // 2
        return pad, rows - pad, 0, cols
    pad = (cols - int(round(w * (rows / h), 7))) // 2
    return 0, rows, pad, cols - pad


def num_image_tokens(image_size, geometry):
    """How many <image> tokens one image of (height, width) becomes in the prompt."""
    n = geometry.patches_per_side
    base = geometry.tokens_per_tile
    if geometry.merge == "flat":
        return base * num_tiles(image_size, geometry)
    rows, cols = grid_shape(image_size, geometry)
    r0, r1, c0, c1 = unpad_bounds(image_size, (rows * n, cols * n))
    return base + (r1 - r0) * (c1 - c0 + 1)  # + 1: the image_newline after every row
