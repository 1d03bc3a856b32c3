"""Image processors against transformers' PIL-backend processors, plus the ops by hand and the errors.

Budget (DESIGN.md): identical shapes, max |diff| within one grey level after normalisation
(1 / 255 / min(std)), mean |diff| <= 1e-3. In practice the outputs are identical to the bit.
"""
import json

import matplotlib.cbook
import numpy as np
import pytest
import torch
from PIL import Image

import weights_convert
from minivlm.processing import (ImageProcessor, center_crop, clamp_pixels, clamp_size, expand_to_square, load_image,
                                shortest_edge_size, to_rgb)
from weights_convert.errors import CheckpointError, MissingConfigError

transformers = pytest.importorskip("transformers")

HF_CLASSES = {
    "vit": (transformers.ViTImageProcessorPil, {}),
    "siglip": (transformers.SiglipImageProcessorPil, {}),
    "blip": (transformers.BlipImageProcessorPil, {"size": {"height": 96, "width": 80}}),
    "clip": (transformers.CLIPImageProcessorPil, {}),
    # crop larger than the resized image on one side: HF pads with zeros
    "clip_odd": (transformers.CLIPImageProcessorPil, {"size": {"shortest_edge": 31}, "crop_size": {"height": 45, "width": 17},
                                                      "resample": 2}),
    "clip_longest": (transformers.CLIPImageProcessorPil, {"size": {"shortest_edge": 40, "longest_edge": 64}}),
    "llava": (transformers.LlavaImageProcessorPil, {}),
    "llava_pad": (transformers.LlavaImageProcessorPil, {"do_pad": True, "size": {"shortest_edge": 50},
                                                        "crop_size": {"height": 50, "width": 50}}),
}


@pytest.fixture(scope="module")
def photo():
    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    image.load()
    return image


def random_rgb(height, width, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def in_modes(photo):
    """The photo (small) in every mode HF's convert_to_rgb treats differently."""
    small = photo.resize((61, 47))
    rgba = small.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(small.size))  # alpha from 0 to 255
    p_trans = small.convert("P")
    p_trans.info["transparency"] = 0
    rgb_trans = small.copy()
    rgb_trans.info["transparency"] = tuple(np.asarray(small)[0, 0].tolist())
    i16 = Image.fromarray((np.asarray(small.convert("L"), np.uint16) * 4))  # mode I;16, values up to 1020
    assert i16.mode == "I;16"
    la = small.convert("LA")
    la.putalpha(Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize(small.size))
    return {"L": small.convert("L"), "LA": la, "P": small.convert("P"), "P_transparency": p_trans,
            "RGBA": rgba, "CMYK": small.convert("CMYK"), "I;16": i16, "RGB_transparency": rgb_trans,
            "1": small.convert("1")}


def save_hf(name, tmp_path):
    cls, kwargs = HF_CLASSES[name]
    hf = cls(**kwargs)
    hf.save_pretrained(tmp_path)
    return hf, weights_convert.load_image_processor(tmp_path)


def assert_within_budget(hf, ours, images):
    try:
        expected = hf(images, return_tensors="pt")["pixel_values"]
    except ValueError:  # e.g. a 1x300 image under longest_edge=64 would need 0 rows: we refuse too
        with pytest.raises(ValueError, match="at least 1 pixel"):
            ours(images)
        return
    got = ours(images)["pixel_values"]
    assert got.shape == expected.shape and got.dtype == torch.float32
    diff = (got - expected).abs()
    grey_level = 1 / 255 / min(ours.image_std) if ours.do_normalize else 1 / 255
    assert diff.max() <= grey_level + 1e-6 and diff.mean() <= 1e-3, (diff.max(), diff.mean())


@pytest.mark.parametrize("name", sorted(HF_CLASSES))
def test_parity_photo_and_odd_sizes(name, photo, tmp_path):
    hf, ours = save_hf(name, tmp_path)
    assert_within_budget(hf, ours, [photo])
    for i, (h, w) in enumerate([(27, 104), (1, 300), (513, 7), (3, 5), (1, 1)]):
        assert_within_budget(hf, ours, [random_rgb(h, w, seed=i)])


@pytest.mark.parametrize("name", ["clip", "siglip", "llava_pad"])
def test_parity_modes(name, photo, tmp_path):
    hf, ours = save_hf(name, tmp_path)
    for mode, image in in_modes(photo).items():
        assert_within_budget(hf, ours, [image])


def test_vit_keeps_hf_no_conversion(photo, tmp_path):
    # HF's ViT processor has do_convert_rgb unset: RGB works, a grey image fails (HF fails too).
    hf, ours = save_hf("vit", tmp_path)
    assert ours.do_convert_rgb is False
    with pytest.raises(ValueError):
        hf(photo.convert("L"))
    with pytest.raises(ValueError, match="do_convert_rgb"):
        ours(photo.convert("L"))


def test_batch_and_numpy_input(photo, tmp_path):
    hf, ours = save_hf("clip", tmp_path)
    images = [photo, random_rgb(40, 90), np.asarray(random_rgb(33, 12, seed=3))]
    assert_within_budget(hf, ours, images)
    assert ours(images)["pixel_values"].shape == (3, 3, 224, 224)


def test_old_hub_config_int_sizes(photo, tmp_path):
    """openai/clip-* style: feature_extractor_type, size and crop_size as ints, no do_convert_rgb."""
    cfg = {"feature_extractor_type": "CLIPFeatureExtractor", "size": 64, "crop_size": 48, "do_center_crop": True,
           "do_normalize": True, "do_resize": True, "resample": 3,
           "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
    hf = transformers.CLIPImageProcessorPil.from_pretrained(tmp_path)
    ours = weights_convert.load_image_processor(tmp_path)
    assert ours.size == {"shortest_edge": 64} and ours.crop_size == {"height": 48, "width": 48}
    assert_within_budget(hf, ours, [photo, random_rgb(20, 70)])


# --- the ops by hand -------------------------------------------------------------------------

def test_to_rgb_by_hand():
    rgba = Image.fromarray(np.array([[[200, 100, 0, 0], [200, 100, 0, 255], [0, 0, 0, 128]]], np.uint8), "RGBA")
    got = np.asarray(to_rgb(rgba))[0]
    assert got[0].tolist() == [255, 255, 255]  # fully transparent -> white
    assert got[1].tolist() == [200, 100, 0]  # opaque -> itself
    assert abs(int(got[2][0]) - 127) <= 1  # half transparent black on white -> mid grey
    i16 = Image.fromarray(np.array([[0, 100, 255, 256, 40000]], np.uint16))
    assert np.asarray(to_rgb(i16))[0, :, 0].tolist() == [0, 100, 255, 255, 255]  # PIL clips, HF too


def test_shortest_edge_size_by_hand():
    assert shortest_edge_size(600, 512, 224) == (262, 224)  # int(224 * 600 / 512) = 262.5 -> 262
    assert shortest_edge_size(27, 104, 224) == (224, 862)  # 862.8 truncated
    assert shortest_edge_size(5, 5, 3) == (3, 3)
    assert shortest_edge_size(100, 400, 40, longest_edge=80) == (20, 80)  # long side capped, short follows


def test_center_crop_by_hand():
    image = Image.fromarray(np.arange(5 * 7, dtype=np.uint8).reshape(5, 7))
    crop = np.asarray(center_crop(image, 2, 3))
    assert crop.tolist() == [[9, 10, 11], [16, 17, 18]]  # top = (5-2)//2 = 1, left = (7-3)//2 = 2
    bigger = np.asarray(center_crop(image, 8, 7))  # 3 more rows than the image: 2 above (ceil), 1 below
    assert bigger.shape == (8, 7) and (bigger[:2] == 0).all() and (bigger[7] == 0).all()
    assert bigger[2:7].tolist() == np.asarray(image).tolist()


def test_expand_to_square_by_hand():
    image = Image.new("RGB", (3, 8), (10, 20, 30))
    square = np.asarray(expand_to_square(image, (122, 116, 104)))
    assert square.shape == (8, 8, 3)
    assert (square[:, :2] == [122, 116, 104]).all() and (square[:, 5:] == [122, 116, 104]).all()
    assert (square[:, 2:5] == [10, 20, 30]).all()  # offset (8 - 3) // 2 = 2
    proc = ImageProcessor(do_pad=True, do_resize=False, do_normalize=False, image_mean=(0.48145466, 0.4578275, 0.40821073))
    x = proc(image)["pixel_values"][0]  # the pad is LLaVA's int(mean * 255) grey
    assert torch.allclose(x[:, 0, 0] * 255, torch.tensor([122.0, 116.0, 104.0]))


def test_clamp_size_by_hand():
    assert clamp_size(100, 200, 10, 100_000) == (100, 200)  # inside: unchanged
    assert clamp_size(400, 300, max_pixels=30_000) == (200, 150)  # s = 0.5 exactly
    assert clamp_size(10, 20, min_pixels=800) == (20, 40)  # s = 2 exactly
    h, w = clamp_size(333, 517, max_pixels=10_000)
    assert h * w <= 10_000 and abs(h / w - 333 / 517) < 0.02 and (h + 1) * (w + 1) > 10_000
    h, w = clamp_size(7, 13, min_pixels=1000)
    assert h * w >= 1000 and abs(h / w - 7 / 13) < 0.05 and (h - 1) * (w - 1) < 1000
    assert clamp_size(1, 300, max_pixels=100) == (1, 100)  # a 1-pixel side cannot shrink: cut the long one
    with pytest.raises(ValueError, match="min_pixels"):
        clamp_size(10, 10, min_pixels=200, max_pixels=100)
    with pytest.raises(ValueError, match="no size"):
        clamp_size(1, 10, min_pixels=199, max_pixels=199)  # ceil gives 5 x 45, cut to 5 x 39 = 195 < 199
    image = clamp_pixels(random_rgb(400, 300), max_pixels=30_000)
    assert image.size == (150, 200)


def test_clamp_in_processor():
    proc = ImageProcessor(do_resize=False, max_pixels=600, min_pixels=100)
    assert proc(random_rgb(90, 40))["pixel_values"].shape == (1, 3, 36, 16)  # s = sqrt(600/3600)
    assert proc(random_rgb(5, 4))["pixel_values"].shape == (1, 3, 12, 9)  # s = sqrt(100/20), ceil


# --- errors ----------------------------------------------------------------------------------

def test_errors_on_bad_files_and_images(tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"this is text, not a JPEG")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="no image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="0x5"):
        load_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="4x0"):
        ImageProcessor()(Image.new("RGB", (0, 4)))
    with pytest.raises(ValueError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(TypeError, match="expected an image"):
        load_image(42)
    with pytest.raises(ValueError, match="no images"):
        ImageProcessor()([])


@pytest.mark.parametrize("kwargs, match", [
    ({"size": {"height": 0, "width": 4}}, "positive"),
    ({"size": {"shortest_edge": -3}}, "positive"),
    ({"size": {"heigth": 4, "width": 4}}, "keys"),
    ({"do_center_crop": True, "crop_size": {"height": 4, "width": 0}}, "positive"),
    ({"do_center_crop": True}, "crop_size"),
    ({"image_std": (0.5, 0.0, 0.5)}, "image_std"),
    ({"image_mean": (0.5, 0.5)}, "3 values"),
    ({"resample": 9}, "resample"),
    ({"min_pixels": 50, "max_pixels": 10}, "min_pixels"),
])
def test_errors_on_impossible_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ImageProcessor(**kwargs)(random_rgb(8, 8))


def test_errors_on_bad_configs(tmp_path):
    with pytest.raises(MissingConfigError):
        weights_convert.load_image_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "DetrImageProcessor"}))
    with pytest.raises(CheckpointError, match="DetrImageProcessor.*supported"):
        weights_convert.load_image_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "CLIPImageProcessor",
                                                                   "size": {"longest_edge": 3}}))
    with pytest.raises(CheckpointError, match="size"):
        weights_convert.load_image_processor(tmp_path)
