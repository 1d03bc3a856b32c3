"""Anyres geometry against transformers' own functions, over a deterministic sweep of sizes and
aspect ratios (thin strips, squares, the seed's 27x104 both ways, sizes around the pinpoints)."""
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers.image_processing_utils import get_patch_output_size, select_best_resolution as hf_select
from transformers.image_utils import ChannelDimension
from transformers.models.llava_next.modeling_llava_next import (get_anyres_image_grid_shape,
                                                                 image_size_to_num_patches, unpad_image)
from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

from minivlm.processing.anyres import (AnyresGeometry, fitted_size, grid_shape, num_image_tokens, num_tiles,
                                       padding_for, select_best_resolution, unpad_bounds)

HUB_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
SIDES = [1, 2, 3, 7, 13, 27, 50, 104, 223, 336, 337, 500, 671, 672, 673, 1000, 1008, 2017]
SIZES = sorted(set(itertools.product(SIDES, SIDES)))  # 324 sizes, every aspect ratio from 1:2017 to 2017:1
GEOMETRIES = {
    "hub-336-14": AnyresGeometry(HUB_PINPOINTS, 336, 14),
    "tiny-12-6": AnyresGeometry([[12, 24], [24, 12], [24, 24], [36, 12], [12, 36]], 12, 6),
    "tiny-odd-35-7": AnyresGeometry([[35, 70], [105, 35], [70, 70], [35, 35], [70, 105]], 35, 7),
}


def test_select_best_resolution_matches_hf():
    for pinpoints in (HUB_PINPOINTS, [list(p) for p in GEOMETRIES["tiny-odd-35-7"].grid_pinpoints]):
        for size in SIZES:
            assert select_best_resolution(size, pinpoints) == tuple(hf_select(size, pinpoints)), size


def test_seed_example_orientation():
    # HF reads image_sizes as (height, width). By hand: 27 x 104 has 2808 pixels, fewer than any canvas
    # shows, so every canvas it fits gives the same effective resolution; the least waste wins: 336 x 672.
    assert select_best_resolution((27, 104), HUB_PINPOINTS) == (336, 672)
    # 104 high, 27 wide ties on both counts between 336 x 672 and 672 x 336: the first pinpoint wins.
    assert select_best_resolution((104, 27), HUB_PINPOINTS) == (336, 672)
    assert fitted_size((104, 27), (336, 672)) == (336, 88)  # ceil(27 * 336 / 104) = ceil(87.23)
    assert fitted_size((27, 104), (336, 672)) == (175, 672)  # ceil(27 * 672 / 104) = ceil(174.46)
    assert padding_for((175, 672), (336, 672)) == (80, 81, 0, 0)  # the odd row goes to the bottom


def test_fitted_size_and_padding_match_hf():
    for size, target in itertools.product(SIZES[::3], [(336, 672), (35, 105), (70, 70)]):
        image = np.zeros((3, *size), np.uint8)
        assert fitted_size(size, target) == tuple(get_patch_output_size(image, target, ChannelDimension.FIRST))
        top, bottom, left, right = padding_for(fitted_size(size, target), target)
        assert top + bottom + fitted_size(size, target)[0] == target[0] and 0 <= bottom - top <= 1
        assert left + right + fitted_size(size, target)[1] == target[1] and 0 <= right - left <= 1


@pytest.mark.parametrize("name", GEOMETRIES)
def test_grid_and_tiles_match_hf(name):
    g = GEOMETRIES[name]
    pinpoints = [list(p) for p in g.grid_pinpoints]
    for size in SIZES:
        assert grid_shape(size, g) == get_anyres_image_grid_shape(list(size), pinpoints, g.tile_size)
        assert num_tiles(size, g) == image_size_to_num_patches(torch.tensor(size), pinpoints, g.tile_size)


def test_unpad_bounds_match_hf_unpad_image():
    for size, grid in itertools.product(SIZES, [(24, 48), (48, 24), (24, 24), (10, 25)]):
        r0, r1, c0, c1 = unpad_bounds(size, grid)
        index = torch.arange(grid[0] * grid[1]).view(1, *grid)
        assert torch.equal(unpad_image(index, torch.tensor(size)), index[:, r0:r1, c0:c1]), (size, grid)


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("strategy", ["default", "full"])
def test_num_image_tokens_matches_hf_processor(name, strategy):
    g = AnyresGeometry(GEOMETRIES[name].grid_pinpoints, GEOMETRIES[name].tile_size, GEOMETRIES[name].patch_size,
                       vision_feature_select_strategy=strategy)
    # HF's processor count without its tokenizer: the method on a stand-in holding the fields it reads.
    proc = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=[list(p) for p in g.grid_pinpoints]),
                           patch_size=g.patch_size, num_additional_image_tokens=1)
    proc._get_unpadded_features = lambda *a: LlavaNextProcessor._get_unpadded_features(proc, *a)
    for size in SIZES:
        hf = LlavaNextProcessor._get_number_of_features(proc, *size, g.tile_size, g.tile_size)
        hf -= strategy == "default"  # HF's replace_image_token drops the [CLS] count for 'default'
        assert num_image_tokens(size, g) == hf, size


def test_flat_merge_counts_every_tile():
    g = AnyresGeometry(GEOMETRIES["tiny-12-6"].grid_pinpoints, 12, 6, merge="flat")
    assert num_image_tokens((27, 104), g) == 4 * (1 + 3)  # base + a 1x3 grid, 2x2 patches each


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="not a multiple of the tile size"):
        AnyresGeometry([[30, 60]], 12, 6)
    with pytest.raises(ValueError, match="merge must be"):
        AnyresGeometry([[12, 24]], 12, 6, merge="spatial")
    with pytest.raises(ValueError, match="at least 1 pixel"):
        select_best_resolution((0, 5), [[12, 24]])
