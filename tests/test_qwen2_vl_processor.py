"""Qwen2-VL's processor: equal to transformers' Qwen2VLImageProcessorPil on odd sizes and modes
(read through load_image_processor), smart_resize against HF's, and the video path — which HF can
only run with torchvision — by hand and against the image path on identical frames."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import weights_convert
from minivlm.processing.qwen2_vl import Qwen2VLImageProcessor, smart_resize

transformers = pytest.importorskip("transformers")

SIZES = [(37, 91, "RGB"), (300, 17, "RGBA"), (5, 9, "L"), (333, 500, "P"), (1000, 29, "RGB"), (56, 56, "LA")]


def random_image(h, w, mode, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen2_vl_proc")
    hf = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 40)
    hf.save_pretrained(folder)
    return weights_convert.load_image_processor(folder), hf


def test_images_equal_hf_on_odd_sizes_and_modes(processors):
    ours, hf = processors
    images = [random_image(h, w, mode, seed=i) for i, (h, w, mode) in enumerate(SIZES)]
    a, b = ours(images), hf(images, return_tensors="pt")
    assert torch.equal(a["image_grid_thw"], b["image_grid_thw"])
    assert a["pixel_values"].shape == b["pixel_values"].shape
    diff = (a["pixel_values"] - b["pixel_values"]).abs()
    assert diff.max() <= 2 / 255 / 0.26 and diff.mean() <= 1e-3  # DESIGN.md: one grey level


def test_smart_resize_equals_hf():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize
    rng = np.random.default_rng(1)
    for h, w in [(1, 1), (3, 500), (28, 28), (29, 57), (4000, 3000)] + [tuple(rng.integers(1, 3000, 2)) for _ in range(50)]:
        if max(h, w) / min(h, w) > 200:
            continue
        for lo, hi in [(56 * 56, 28 * 28 * 1280), (28 * 28 * 4, 28 * 28 * 40)]:
            assert smart_resize(int(h), int(w), 28, lo, hi) == hf_smart_resize(int(h), int(w), 28, lo, hi)
    with pytest.raises(ValueError, match="aspect ratio must be smaller than 200"):
        smart_resize(1, 201)


def test_small_images_are_scaled_up_like_hf(processors):
    """Below min_pixels HF grows the image to reach it (no error); so do we."""
    ours, hf = processors
    image = random_image(3, 4, "RGB")
    grid = ours(image)["image_grid_thw"]
    assert grid.tolist() == hf(image, return_tensors="pt")["image_grid_thw"].tolist()
    assert int(grid[0, 1] * grid[0, 2]) * 14 * 14 >= 28 * 28 * 4


def test_old_config_min_max_pixels(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "min_pixels": 3136, "max_pixels": 12544,
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}))
    ours = weights_convert.load_image_processor(tmp_path)
    hf = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    image = random_image(400, 260, "RGB")
    a, b = ours(image), hf(image, return_tensors="pt")
    assert a["image_grid_thw"].tolist() == b["image_grid_thw"].tolist()
    assert (a["pixel_values"] - b["pixel_values"]).abs().max() <= 2 / 255 / 0.26


def test_video_by_hand():
    """Patch (slice t, row r, col c) = the normalised frames 2t, 2t+1 cut at that place, (C, T, p, p)."""
    proc = Qwen2VLImageProcessor(size={"shortest_edge": 56 * 56, "longest_edge": 56 * 84})
    frames = np.random.default_rng(2).integers(0, 256, (3, 56, 84, 3), dtype=np.uint8)  # already multiples of 28
    out = proc.video(frames)
    assert out["video_grid_thw"].tolist() == [[2, 4, 6]]  # 3 frames -> padded to 4 -> 2 slices
    norm = (frames.astype(np.float64) / 255).astype(np.float32)
    norm = (norm - np.float32(proc.image_mean)) / np.float32(proc.image_std)  # (F, H, W, C)
    norm = np.concatenate([norm, norm[-1:]])  # the last frame repeated to an even count
    p, m, rows, cols = 14, 2, 4, 6
    for t in range(2):
        for r in range(rows):
            for c in range(cols):
                index = t * rows * cols + ((r // m) * (cols // m) + c // m) * m * m + (r % m) * m + c % m
                cube = norm[2 * t:2 * t + 2, r * p:(r + 1) * p, c * p:(c + 1) * p].transpose(3, 0, 1, 2)  # (C, T, p, p)
                np.testing.assert_allclose(out["pixel_values_videos"][index].numpy(), cube.reshape(-1), atol=1e-6)


def test_video_of_identical_frames_is_the_image(processors):
    ours, _ = processors
    frame = np.asarray(random_image(61, 97, "RGB"))
    image = ours(Image.fromarray(frame))
    video = ours.video(np.stack([frame, frame]))
    assert video["video_grid_thw"].tolist() == image["image_grid_thw"].tolist()
    assert torch.equal(video["pixel_values_videos"], image["pixel_values"])
    # an odd count: the last slice is the last frame twice, i.e. that frame as an image
    other = np.asarray(random_image(61, 97, "RGB", seed=5))
    video = ours.video(np.stack([frame, frame, other]))
    n = int(image["image_grid_thw"].prod())
    assert torch.equal(video["pixel_values_videos"][n:], ours(Image.fromarray(other))["pixel_values"])


def test_video_frame_sampling_and_bad_input(processors):
    ours, _ = processors
    frames = np.stack([np.full((28, 28, 3), i, dtype=np.uint8) for i in range(10)])
    out = ours.video(frames, num_frames=4)
    assert out["video_grid_thw"].tolist() == [[2, 4, 4]]  # 28 x 28 grows to min_pixels: 56 x 56
    first = out["pixel_values_videos"].reshape(-1, 3, 2, 14, 14)[0]  # slice 0: frames 0 and 2 (HF's indices 0, 2, 5, 7)
    levels = ((np.array([0, 2], np.float64) / 255).astype(np.float32) - np.float32(ours.image_mean[0])) / np.float32(ours.image_std[0])
    np.testing.assert_allclose(first[0, :, 0, 0].numpy(), levels, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(frames, H, W, 3\) uint8"):
        ours.video(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="cannot sample 12 frames from a video of 10"):
        ours.video(frames, num_frames=12)
