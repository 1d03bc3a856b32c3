"""Qwen2-VL's image and video processing: native resolution, cut into flat patches.

    image -> RGB -> smart_resize (both sides multiples of patch * merge = 28, pixel count within
             [min_pixels, max_pixels], aspect kept) -> bicubic -> rescale + CLIP normalisation
          -> patchify: the image as temporal_patch_size equal frames, cut into (C, T, p, p) cubes in
             merge-block-major order -> pixel_values (N, C*T*p*p), image_grid_thw (1, h, w) per image
    video frames (F, H, W, 3) uint8 -> sampled, each frame resized as above, padded to a multiple of
             temporal_patch_size by repeating the last frame -> pixel_values_videos, video_grid_thw (F/T, h, w)

Equal to transformers' Qwen2VLImageProcessorPil (tests/test_qwen2_vl_processor.py). Images smaller
than min_pixels are scaled UP to reach it, as HF does (smart_resize), not refused; only an aspect
ratio over 200 is refused, by HF's rule. transformers' video processor needs torchvision; the video
path here is checked by hand and against the image path on identical frames.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .image import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, resize
from .processors import CONFIG_FIELDS, ImageProcessor


def smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=28 * 28 * 1280):
    """(height, width) -> the nearest (h, w) with both multiples of `factor`, h * w in [min, max],
    aspect ratio nearly kept (Qwen2-VL's rule): round each side to the factor; if that is too
    large, shrink by sqrt(pixels / max) and round down; if too small, grow by sqrt(min / pixels)
    and round up."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)} "
                         f"({height}x{width})")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(factor, math.floor(height / beta / factor) * factor), max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def patchify(frames, patch_size=14, temporal_patch_size=2, merge_size=2):
    """frames (F, C, H, W), F a multiple of temporal_patch_size -> (patches (N, C*T*p*p), (t, h, w)).

    Patch order: temporal slice, then m x m block (row-major), then position inside the block — so the
    PatchMerger's m*m neighbours are consecutive. Each patch's numbers are ordered (C, T, p, p), the
    Conv3d kernel's layout."""
    f, c, height, width = frames.shape
    t, h, w, m, p = f // temporal_patch_size, height // patch_size, width // patch_size, merge_size, patch_size
    x = frames.reshape(t, temporal_patch_size, c, h // m, m, p, w // m, m, p)
    #               axes: 0  1                   2  3       4  5  6       7  8
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, h/m, w/m, m, m, C, T, p, p)
    return x.reshape(t * h * w, c * temporal_patch_size * p * p), (t, h, w)


def merged_tokens(grid_thw, merge_size):
    """Placeholder tokens of each image / video, (t, h, w) patches each: the PatchMerger makes one LM
    token of every merge x merge block. The model checks its placeholders with this count and the
    processor writes that many <|image_pad|> / <|video_pad|> tokens: one count, two callers."""
    rows = grid_thw.tolist() if hasattr(grid_thw, "tolist") else list(grid_thw)
    return [int(t) * int(h) * int(w) // merge_size ** 2 for t, h, w in rows]


@dataclass
class Qwen2VLImageProcessor(ImageProcessor):
    """HF's fields: size {"shortest_edge": min_pixels, "longest_edge": max_pixels}, patch_size,
    temporal_patch_size, merge_size; bicubic, CLIP mean/std."""
    size: dict = field(default_factory=lambda: {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280})
    resample: int = 3
    image_mean: tuple = OPENAI_CLIP_MEAN
    image_std: tuple = OPENAI_CLIP_STD
    default_to_square: bool = False
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2

    def __post_init__(self):
        super().__post_init__()
        if set(self.size) != {"shortest_edge", "longest_edge"}:
            raise ValueError(f"Qwen2-VL's size must give shortest_edge (min pixels) and longest_edge (max pixels), "
                             f"got {self.size}")

    @property
    def factor(self):
        return self.patch_size * self.merge_size

    def target_size(self, height, width):
        return smart_resize(height, width, self.factor, self.size["shortest_edge"], self.size["longest_edge"])

    def geometry(self, image):
        if not self.do_resize:
            if image.height % self.factor or image.width % self.factor:
                raise ValueError(f"with do_resize off, the image sides must be multiples of {self.factor}, "
                                 f"got {image.height}x{image.width}")
            return image
        return resize(image, *self.target_size(image.height, image.width), self.resample)

    def patches(self, frames):
        """(F, 3, H, W) float frames -> (N, 3*T*p*p), (t, h, w), the last frame repeated to fill T."""
        if pad := -len(frames) % self.temporal_patch_size:
            frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        return patchify(frames, self.patch_size, self.temporal_patch_size, self.merge_size)

    def __call__(self, images, return_tensors="pt"):
        """One image or a list -> {"pixel_values": (N, 3*T*p*p), "image_grid_thw": (I, 3)}."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("no images given: expected an image or a non-empty list of images")
        # an image is one frame, repeated to temporal_patch_size identical frames
        out = [self.patches(self.preprocess_one(im)[None]) for im in images]
        return self.batch("pixel_values", "image_grid_thw", out, return_tensors)

    def video(self, frames, num_frames=None, return_tensors="pt"):
        """frames: (F, H, W, 3) uint8 array (or a list of such videos) -> {"pixel_values_videos",
        "video_grid_thw"}. num_frames: sample that many (rounded to a multiple of T) evenly, as HF's
        sample_frames: indices arange(0, F, F / n)."""
        videos = frames if isinstance(frames, (list, tuple)) else [frames]
        out = []
        for video in videos:
            video = np.asarray(video)
            if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
                raise ValueError(f"a video must be a (frames, H, W, 3) uint8 array, got {video.shape} {video.dtype}")
            if num_frames is not None:
                n = round(num_frames / self.temporal_patch_size) * self.temporal_patch_size
                if not 0 < n <= len(video):
                    raise ValueError(f"cannot sample {n} frames from a video of {len(video)}")
                video = video[torch.arange(0, len(video), len(video) / n).int().numpy()]
            out.append(self.patches(np.stack([self.preprocess_one(frame) for frame in video])))
        return self.batch("pixel_values_videos", "video_grid_thw", out, return_tensors)

    @staticmethod
    def batch(pixels_key, grid_key, out, return_tensors):
        pixels = np.concatenate([p for p, _ in out]).astype(np.float32)
        grid = np.array([g for _, g in out], dtype=np.int64)
        if return_tensors == "pt":
            return {pixels_key: torch.from_numpy(pixels), grid_key: torch.from_numpy(grid)}
        if return_tensors in ("np", None):
            return {pixels_key: pixels, grid_key: grid}
        raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")


def qwen2_vl_processor_from_config(config):
    """preprocessor_config.json -> Qwen2VLImageProcessor; min_pixels / max_pixels (older files) override
    size as in HF's __init__."""
    kwargs = {k: config[k] for k in CONFIG_FIELDS + ("patch_size", "temporal_patch_size", "merge_size")
              if config.get(k) is not None and k not in ("do_center_crop", "crop_size", "do_pad")}
    size = dict(kwargs.pop("size", None) or {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280})
    size = {k: v for k, v in size.items() if k in ("shortest_edge", "longest_edge")}
    if config.get("min_pixels") is not None:
        size["shortest_edge"] = config["min_pixels"]
    if config.get("max_pixels") is not None:
        size["longest_edge"] = config["max_pixels"]
    return Qwen2VLImageProcessor(size=size, **kwargs)
