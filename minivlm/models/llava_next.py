"""LLaVA-NeXT (LLaVA-1.6; Liu et al. 2024): LLaVA that reads an image as several encoder-sized tiles.

It is LLaVA (llava.py) with one thing changed: how the features of one image are laid out.

    pixel_values (B, T, 3, t, t), image_sizes (B, 2)     T: tiles, padded across the batch
      -> the first num_tiles(image_size) tiles of each image  (sum_k, 3, t, t)
      -> vision tower, feature selection, projector (LLaVA's)  (sum_k, n*n, D)
      -> per image, merge ('spatial_unpad', LLaVA-NeXT's):
           tiles 1.. laid back into a (rows*n, cols*n) feature grid,
           rows/cols that only saw padding cut (anyres.unpad_bounds),
           image_newline appended after every row, the base tile's n*n features in front
         or 'flat' (the original repo's mm_patch_merge_type='flat'): all tiles' features in order
      -> written at the <image> tokens, as LLaVA does          (B, L, D)

How many features an image gives is anyres.num_image_tokens, the same function the prompt
builder uses. Names follow transformers' LlavaNextForConditionalGeneration.
"""
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..blocks.token_ids import lookup_tokens
from ..processing.anyres import MERGES, AnyresGeometry, grid_shape, num_image_tokens, num_tiles, unpad_bounds
from .llava import LlavaConfig, LlavaForConditionalGeneration, check_feature_selection, merge_image_features
from .llava import tower_features

DEFAULT_PINPOINTS = ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


@dataclass
class LlavaNextConfig(LlavaConfig):
    image_grid_pinpoints: tuple = DEFAULT_PINPOINTS   # candidate (height, width) canvases
    merge: str = "spatial_unpad"                      # or 'flat' (no unpad, no image_newline)

    def __post_init__(self):
        super().__post_init__()
        self.geometry()  # checks pinpoints, merge and strategy now, not at the first forward

    def geometry(self, strategy=None):
        v = self.vision_config
        tile = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
        if not isinstance(v.image_size, int) and v.image_size[0] != v.image_size[1]:
            raise ValueError(f"LLaVA-NeXT tiles are square; the vision tower takes {v.image_size}")
        strategy = strategy or self.vision_feature_select_strategy
        geometry = AnyresGeometry(self.image_grid_pinpoints, tile, v.patch_size, strategy, self.merge, v.class_token)
        n = geometry.patches_per_side
        if self.merge == "spatial_unpad" and geometry.tokens_per_tile != n * n:
            # A tile's selected features must be its n x n patch grid: 'default' on a CLIP tower (drops
            # [CLS]), 'full' on a SigLIP one. transformers fails on the other pairings inside a view.
            tower, keep = ("with [CLS]", "'default'") if v.class_token else ("without [CLS] (SigLIP)", "'full'")
            raise ValueError(f"vision_feature_select_strategy {strategy!r} on a tower {tower} leaves "
                             f"{geometry.tokens_per_tile} features per tile, not the {n}x{n} grid merge "
                             f"'spatial_unpad' lays out; use {keep} (or merge 'flat')")
        return geometry


class LlavaNextForConditionalGeneration(LlavaForConditionalGeneration):
    def __init__(self, cfg: LlavaNextConfig):
        super().__init__(cfg)
        if cfg.merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {cfg.merge!r}")
        # The learned "end of row" embedding (LLaVA-NeXT); loaded from the checkpoint.
        self.image_newline = nn.Parameter(torch.zeros(cfg.text_config.hidden_size))

    def tiles_of(self, pixel_values, image_sizes, geometry, tiled=None):
        """(B, T, 3, t, t) padded stacks -> (sum_k, 3, t, t) real tiles, and k per image.
        tiled[i] False: image i is read from its base tile alone (OneVision's several-image prompts)."""
        if image_sizes is None:
            raise ValueError("LLaVA-NeXT needs image_sizes (B, 2), each image's original (height, width), "
                             "with pixel_values")
        sizes = [tuple(int(v) for v in s) for s in image_sizes]
        tiled = [True] * len(sizes) if tiled is None else tiled
        counts = [num_tiles(s, geometry) if t else 1 for s, t in zip(sizes, tiled)]
        if pixel_values.dim() == 5:
            if pixel_values.shape[0] != len(sizes) or pixel_values.shape[1] < max(counts):
                raise ValueError(f"pixel_values {tuple(pixel_values.shape)} do not fit image_sizes {sizes}: "
                                 f"expected ({len(sizes)}, >= {max(counts)}, 3, t, t) (tiles per image {counts})")
            pixel_values = torch.cat([p[:k] for p, k in zip(pixel_values, counts)])  # drop the batch padding
        elif pixel_values.dim() != 4 or pixel_values.shape[0] != sum(counts):
            raise ValueError(f"pixel_values must be (B, T, 3, t, t) or (sum of tiles = {sum(counts)}, 3, t, t); "
                             f"got {tuple(pixel_values.shape)}")
        return pixel_values, sizes, counts

    def merge_tiles(self, features, image_size, geometry):
        """One image's tile features (k, n*n, D), base tile first -> its token sequence (num_image_tokens, D)."""
        if geometry.merge == "flat":
            return features.reshape(-1, features.shape[-1])
        if features.shape[0] == 1:  # a base tile alone: its features and one newline (HF's else branch)
            return torch.cat([features[0], self.image_newline[None].to(features.dtype)])
        n = geometry.patches_per_side
        rows, cols = grid_shape(image_size, geometry)
        # The tiles back into one picture-shaped grid of features: tile (r, c), patch (h, w) -> (r*n+h, c*n+w).
        grid = rearrange(features[1:], "(r c) (h w) d -> (r h) (c w) d", r=rows, c=cols, h=n, w=n)
        r0, r1, c0, c1 = unpad_bounds(image_size, grid.shape[:2])
        grid = self.resize_grid(grid[r0:r1, c0:c1], n)  # (rows', cols', D): padding cut, HF's unpad_image rounding
        newline = self.image_newline.to(grid.dtype).expand(grid.shape[0], 1, -1)
        grid = torch.cat([grid, newline], dim=1)  # (rows', cols' + 1, D): newline ends every row
        return torch.cat([features[0], grid.flatten(0, 1)])

    def resize_grid(self, grid, patches_per_side):
        """The unpadded (rows, cols, D) feature grid as the LM reads it: unchanged in LLaVA-NeXT
        (OneVision shrinks large ones)."""
        return grid

    def image_tokens(self, image_size, geometry, tiled=True):
        """How many features (and <image> tokens) one image gives."""
        return num_image_tokens(image_size, geometry)

    def select_and_project(self, pixel_values, layer, strategy):
        """(I, 3, t, t) -> the tower's selected features, projected: (I, N, D_t)."""
        return self.multi_modal_projector(tower_features(self.vision_tower, pixel_values, layer, strategy))

    def get_image_features(self, pixel_values, image_sizes=None, vision_feature_layer=None,
                           vision_feature_select_strategy=None, tiled=None):
        """-> a list with one (image_tokens(image_size), D_t) tensor per image."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        check_feature_selection(layer, strategy, self.config.vision_config.num_layers)
        geometry = self.config.geometry(strategy)
        tiles, sizes, counts = self.tiles_of(pixel_values, image_sizes, geometry, tiled)
        features = self.select_and_project(tiles, layer, strategy)
        merged = [self.merge_tiles(f, s, geometry) for f, s in zip(features.split(counts), sizes)]
        for m, s, k in zip(merged, sizes, counts):  # the contract with the prompt builder, checked cheaply
            assert m.shape[0] == self.image_tokens(s, geometry, k > 1), (m.shape, s)
        return merged

    def embed(self, input_ids, pixel_values=None, vision_feature_layer=None, vision_feature_select_strategy=None,
              image_sizes=None, tiled=None):
        inputs_embeds = lookup_tokens(self.get_input_embeddings(), input_ids)  # (B, L, D_t)
        if pixel_values is None:
            return inputs_embeds, None
        per_image = self.get_image_features(pixel_values, image_sizes, vision_feature_layer,
                                            vision_feature_select_strategy, tiled)
        n_tokens = int((input_ids == self.config.image_token_index).sum())
        counts = [f.shape[0] for f in per_image]
        if n_tokens != sum(counts):
            raise ValueError(f"image tokens and image features do not match: input_ids hold {n_tokens} image "
                             f"token(s) (id {self.config.image_token_index}) but the {len(counts)} image(s) give "
                             f"{sum(counts)} features ({counts} per image, anyres.num_image_tokens)")
        features = torch.cat(per_image)  # (sum of counts, D_t)
        return merge_image_features(inputs_embeds, input_ids, features[None], self.config.image_token_index), features

    def forward(self, input_ids=None, pixel_values=None, image_sizes=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, vision_feature_layer=None,
                vision_feature_select_strategy=None, labels=None, use_cache=False, logits_to_keep=0,
                output_hidden_states=False):
        rest = dict(attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                    labels=labels, use_cache=use_cache, logits_to_keep=logits_to_keep,
                    output_hidden_states=output_hidden_states)
        if pixel_values is None or input_ids is None or inputs_embeds is not None:
            # text only (decode steps too), or a bad combination LLaVA's forward explains
            return super().forward(input_ids=input_ids, pixel_values=pixel_values, inputs_embeds=inputs_embeds,
                                   **rest)
        inputs_embeds, features = self.embed(input_ids, pixel_values, vision_feature_layer,
                                             vision_feature_select_strategy, image_sizes)
        out = super().forward(inputs_embeds=inputs_embeds, **rest)
        out.image_hidden_states = features  # (sum of tokens, D_t), as HF returns it
        return out
