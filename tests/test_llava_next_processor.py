"""LlavaNextImageProcessor against transformers' PIL-backend one, through load_image_processor.

Budget (DESIGN.md): identical shapes and image_sizes, max |diff| within one grey level after
normalisation, mean |diff| <= 1e-3. Images: the seed's 27x104 both ways, the real photo, thin
strips and odd sizes, in batches of mixed tile counts (the tile axis padded across the batch).
"""
import tempfile

import matplotlib.cbook
import numpy as np
import pytest
import torch
from PIL import Image

import weights_convert
from minivlm.processing.anyres import AnyresGeometry, num_tiles
from minivlm.processing.llava_next import LlavaNextImageProcessor

transformers = pytest.importorskip("transformers")

HUB = dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
           image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]])
CONFIGS = {
    "hub-v1.6": HUB,
    # small tiles and canvases, bilinear, odd tile side, fixed size
    "tiny-35": dict(size={"shortest_edge": 35}, crop_size={"height": 35, "width": 35}, resample=2,
                    image_grid_pinpoints=[[35, 70], [105, 35], [70, 70], [35, 35], [70, 105]]),
    "tiny-fixed-24": dict(size={"height": 24, "width": 24}, crop_size={"height": 24, "width": 24},
                          image_grid_pinpoints=[[24, 48], [48, 24], [48, 48], [72, 24], [24, 72]],
                          image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.3, 0.25]),
    # the class defaults: 224 tiles cut from 336-multiple canvases, so edge tiles are ragged (112 wide)
    "hf-class-defaults": dict(),
}


def random_rgb(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def photo():
    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    image.load()
    return image


def load_pair(overrides):
    hf = transformers.LlavaNextImageProcessorPil(**overrides)
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = weights_convert.load_image_processor(folder)
    assert isinstance(ours, LlavaNextImageProcessor)
    return ours, hf


def assert_same(ours, hf, images):
    a, b = ours(images), hf(images, return_tensors="pt")
    assert a["pixel_values"].shape == b["pixel_values"].shape
    assert torch.equal(a["image_sizes"], b["image_sizes"].long())
    diff = (a["pixel_values"] - b["pixel_values"]).abs()
    one_grey = 1 / 255 / min(ours.image_std)
    assert diff.max() <= one_grey + 1e-6 and diff.mean() <= 1e-3, (diff.max(), diff.mean())
    return a


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_hf_on_odd_sizes(name):
    ours, hf = load_pair(CONFIGS[name])
    # the seed's example: 27 high x 104 wide, and 104 high x 27 wide
    for images in ([random_rgb(27, 104)], [random_rgb(104, 27, 1)],
                   [random_rgb(5, 301, 2), random_rgb(301, 5, 3), random_rgb(1, 1, 4), random_rgb(97, 53, 5)]):
        assert_same(ours, hf, images)


def test_matches_hf_on_the_photo_and_pads_the_tile_axis(photo):
    ours, hf = load_pair(HUB)
    out = assert_same(ours, hf, [photo, random_rgb(27, 104)])
    geometry = AnyresGeometry(HUB["image_grid_pinpoints"], 336, 14)
    counts = [num_tiles((photo.height, photo.width), geometry), num_tiles((27, 104), geometry)]
    assert counts == [5, 3] and out["pixel_values"].shape == (2, 5, 3, 336, 336)
    assert out["pixel_values"][1, 3:].abs().max() == 0  # the short stack is padded with zero tiles
    assert out["image_sizes"].tolist() == [[photo.height, photo.width], [27, 104]]


def test_tile_layout_by_hand():
    # A 2-tile canvas from a 24 x 48 image of two flat halves: no resize blur, so the tiles are the halves.
    ours = LlavaNextImageProcessor(size={"height": 24, "width": 24}, crop_size={"height": 24, "width": 24},
                                   image_grid_pinpoints=[[24, 48]], image_mean=(0, 0, 0), image_std=(1, 1, 1))
    pixels = np.zeros((24, 48, 3), np.uint8)
    pixels[:, 24:] = 255
    tiles = ours(Image.fromarray(pixels))["pixel_values"][0]  # (3, 3, 24, 24): base, left, right
    assert tiles.shape == (3, 3, 24, 24)
    assert tiles[1].max() == 0 and tiles[2].min() == 1


def test_without_do_pad_unequal_stacks_are_refused():
    ours = LlavaNextImageProcessor(**CONFIGS["tiny-fixed-24"], do_pad=False)
    with pytest.raises(ValueError, match="do_pad"):
        ours([random_rgb(24, 24), random_rgb(24, 72)])
