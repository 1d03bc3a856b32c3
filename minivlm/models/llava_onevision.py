"""LLaVA-OneVision (Li et al. 2024, "LLaVA-OneVision: Easy Visual Task Transfer"): LLaVA-NeXT with a
SigLIP-384 tower and a Qwen2 decoder, read three ways by one model.

It is LLaVA-NeXT (llava_next.py) with three changes:

    single image   anyres tiles as NeXT, but an unpadded feature grid larger than N base tiles
                   ('anyres_max_N') is shrunk by bilinear interpolation (resize_grid)
    several images each image is its base tile alone: n*n features + one image_newline
                   (batch_num_images > 1 for that prompt)
    video          (V, F, 3, t, t) frames -> tower -> projector -> every frame's n x n grid
                   resized bilinearly to ceil(n/2) x ceil(n/2) -> all frames in a row + one
                   image_newline -> written at the <video> tokens

Names follow transformers' LlavaOnevisionForConditionalGeneration; the image features go to the
<image> tokens, the video features to the <video> tokens (two ids, two counts, checked apart).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from ..blocks.token_ids import lookup_tokens
from ..processing.llava_onevision import (ONEVISION_PINPOINTS, max_tiles_of, onevision_image_tokens, shrunk_size,
                                          video_tokens)
from .llava import check_feature_selection, merge_image_features
from .llava_next import LlavaNextConfig, LlavaNextForConditionalGeneration

def tiled_flags(batch_num_images, num_images):
    """Per image: read with anyres tiles (its prompt has one image) or from its base tile alone.
    None is HF's single-image default: every image tiled."""
    if batch_num_images is None:
        return [True] * num_images
    flags = [int(n) == 1 for n in batch_num_images for _ in range(int(n))]
    if len(flags) != num_images:
        raise ValueError(f"batch_num_images {[int(n) for n in batch_num_images]} counts {len(flags)} images, "
                         f"image_sizes has {num_images}")
    return flags


@dataclass
class LlavaOnevisionConfig(LlavaNextConfig):
    image_grid_pinpoints: tuple = ONEVISION_PINPOINTS
    vision_feature_layer: int | list = -1
    vision_feature_select_strategy: str = "full"     # SigLIP has no [CLS]: keep every patch
    image_token_index: int = 151646
    video_token_index: int = 151647
    vision_aspect_ratio: str = "anyres_max_9"

    def __post_init__(self):
        super().__post_init__()
        max_tiles_of(self.vision_aspect_ratio)

    @property
    def max_tiles(self):
        return max_tiles_of(self.vision_aspect_ratio)


class LlavaOnevisionForConditionalGeneration(LlavaNextForConditionalGeneration):
    def resize_grid(self, grid, patches_per_side):
        """(rows, cols, D) -> shrunk to shrunk_size by bilinear interpolation (align_corners=False,
        torch's default, as the reference calls it)."""
        rows, cols = grid.shape[:2]
        size = shrunk_size(rows, cols, patches_per_side, self.config.max_tiles)
        if size == (rows, cols):
            return grid
        image = rearrange(grid, "h w d -> 1 d h w")
        return rearrange(F.interpolate(image, size=size, mode="bilinear"), "1 d h w -> h w d")

    def image_tokens(self, image_size, geometry, tiled=True):
        return onevision_image_tokens(image_size, geometry, self.config.max_tiles, tiled)

    def get_video_features(self, pixel_values_videos, vision_feature_layer=None, vision_feature_select_strategy=None):
        """(V, F, 3, t, t) frames -> (V, F * ceil(n/2)^2 + 1, D_t): each frame's features pooled 2x2
        by bilinear resizing to half the grid (HF's apply_pooling; for an even n that is the mean of
        every 2 x 2 block), the frames in a row, one image_newline after the video."""
        if pixel_values_videos.dim() != 5:
            raise ValueError(f"pixel_values_videos must be (videos, frames, 3, H, W), got "
                             f"{tuple(pixel_values_videos.shape)}")
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        check_feature_selection(layer, strategy, self.config.vision_config.num_layers)
        videos = pixel_values_videos.shape[0]
        features = self.select_and_project(pixel_values_videos.flatten(0, 1), layer, strategy)  # (V*F, N, D)
        n = self.config.geometry(strategy).patches_per_side
        grid = rearrange(features, "vf (h w) d -> vf d h w", h=n, w=n)
        pooled = F.interpolate(grid, size=(math.ceil(n / 2), math.ceil(n / 2)), mode="bilinear")
        pooled = rearrange(pooled, "(v f) d h w -> v (f h w) d", v=videos)
        newline = self.image_newline.to(pooled.dtype).expand(videos, 1, -1)
        return torch.cat([pooled, newline], dim=1)

    def forward(self, input_ids=None, pixel_values=None, image_sizes=None, pixel_values_videos=None,
                image_sizes_videos=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, vision_feature_layer=None, vision_feature_select_strategy=None,
                batch_num_images=None, labels=None, use_cache=False, logits_to_keep=0, output_hidden_states=False):
        """HF's inputs; image_sizes_videos is accepted and unused, as in the reference."""
        rest = dict(attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                    labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep,
                    output_hidden_states=output_hidden_states)
        video_id = self.config.video_token_index
        if input_ids is None:
            if pixel_values_videos is not None:
                raise ValueError("pixel_values_videos need input_ids to find the video tokens")
        elif pixel_values_videos is None and past_key_values is None and int((input_ids == video_id).sum()):
            raise ValueError(f"input_ids hold {int((input_ids == video_id).sum())} video token(s) (id {video_id}) "
                             f"but no pixel_values_videos were given")
        if input_ids is None or (pixel_values is None and pixel_values_videos is None):
            return super().forward(input_ids=input_ids, pixel_values=pixel_values, image_sizes=image_sizes,
                                   inputs_embeds=inputs_embeds, vision_feature_layer=vision_feature_layer,
                                   vision_feature_select_strategy=vision_feature_select_strategy, **rest)
        image_features = video_features = None
        if pixel_values is not None:
            tiled = tiled_flags(batch_num_images, len(image_sizes) if image_sizes is not None else 0)
            inputs_embeds, image_features = self.embed(input_ids, pixel_values, vision_feature_layer,
                                                       vision_feature_select_strategy, image_sizes, tiled)
        else:
            if int((input_ids == self.config.image_token_index).sum()):
                raise ValueError(f"input_ids hold image tokens (id {self.config.image_token_index}) but no "
                                 f"pixel_values were given")
            inputs_embeds = lookup_tokens(self.get_input_embeddings(), input_ids)
        if pixel_values_videos is not None:
            per_video = self.get_video_features(pixel_values_videos, vision_feature_layer,
                                                vision_feature_select_strategy)  # (V, T, D)
            n_tokens = int((input_ids == video_id).sum())
            if n_tokens != per_video.shape[0] * per_video.shape[1]:
                raise ValueError(f"video tokens and video features do not match: input_ids hold {n_tokens} video "
                                 f"token(s) (id {video_id}) but the {per_video.shape[0]} video(s) of "
                                 f"{pixel_values_videos.shape[1]} frames give {per_video.shape[1]} features each "
                                 f"(video_tokens: frames * ceil(n/2)^2 + 1)")
            inputs_embeds = merge_image_features(inputs_embeds, input_ids, per_video, video_id)
            video_features = per_video.flatten(0, 1)
        out = super().forward(inputs_embeds=inputs_embeds, **rest)
        if image_features is not None:
            out.image_hidden_states = image_features  # (sum of tokens, D_t)
        if video_features is not None:
            out.video_hidden_states = video_features  # (V * (F * m^2 + 1), D_t)
        return out
