"""The Vision Transformer (Dosovitskiy et al. 2020), the one vision tower of minivlm.

    image (B, 3, H, W)
      -> patchify: a conv with kernel = stride = patch size      (B, N, D), N = H/p * W/p
      -> [CLS] token prepended (if class_token)                 (B, 1 + N, D)
      -> + learned 1-D position embeddings
      -> (pre_norm) -> pre-norm encoder layers -> final norm
      -> pooled vector (the pooler switch)

CLIP, SigLIP and BLIP towers are this module with switches flipped (see vision/config.py).
Qwen2-VL's tower is too (`packed=True`, forward_packed): flattened patches of any number of
images/videos of any size in one sequence, 2-D RoPE instead of the position table, the PatchMerger
as pooler (vision/packed.py).
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..blocks.activations import get_activation
from ..blocks.rotary import vision_rope_2d
from ..blocks.transformer import Encoder
from ..outputs import ModelOutput
from .config import VisionConfig
from .packed import (PatchEmbedding3D, PatchMerger, attention_segments, block_diagonal_mask, check_grid,
                     patch_positions, window_order)
from .pixels import require_float_pixels


class PatchEmbedding(nn.Module):
    """Cut the image into p x p patches and project each to D: a strided convolution.

    The conv is exactly "unfold into patches, flatten each to 3*p*p numbers, apply one Linear";
    tests/test_vit.py checks that equality.
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.proj = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size,
                              stride=cfg.patch_size, bias=cfg.patch_bias)

    def forward(self, pixel_values):  # (B, C, H, W) -> (B, N, D)
        return rearrange(self.proj(pixel_values), "b d gh gw -> b (gh gw) d")


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.config = cfg
        D = cfg.hidden_size
        if cfg.packed:  # Qwen2-VL: cubes of T frames x p x p, positions by RoPE inside attention
            self.patch_embed = PatchEmbedding3D(cfg.num_channels, cfg.temporal_patch_size, cfg.patch_size, D)
            self.pos_embed = None
        else:
            self.patch_embed = PatchEmbedding(cfg)
            self.pos_embed = nn.Parameter(torch.zeros(cfg.num_positions, D))  # (1 + N, D)
        self.cls_token = nn.Parameter(torch.zeros(D)) if cfg.class_token else None
        self.pre_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps) if cfg.pre_norm else None
        self.encoder = Encoder(cfg.num_layers, dim=D, num_heads=cfg.num_heads, mlp_dim=cfg.intermediate_size,
                               act=cfg.hidden_act, eps=cfg.layer_norm_eps, qkv_bias=cfg.qkv_bias,
                               dropout=cfg.attention_dropout, norm=cfg.norm, gated_mlp=cfg.gated_mlp)
        self.final_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps) if cfg.final_norm != "none" else None
        if cfg.pooler == "dense_tanh":
            self.pooler = nn.Linear(D, cfg.pooler_output_size or D)
            self.pooler_act = get_activation(cfg.pooler_act)
        elif cfg.pooler == "attention":
            from .pooling import AttentionPoolingHead  # SigLIP's MAP head
            self.pooler = AttentionPoolingHead(cfg)
        elif cfg.pooler == "patch_merger":
            self.pooler = PatchMerger(D, cfg.merger_size or D, cfg.spatial_merge_size, eps=cfg.layer_norm_eps,
                                      norm=cfg.norm)
        else:
            self.pooler = None

    def check_pixel_values(self, pixel_values, interpolate_pos_encoding):
        cfg = self.config
        if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a (batch, {cfg.num_channels}, H, W) tensor, got {shape}")
        require_float_pixels(pixel_values)
        _, c, h, w = pixel_values.shape
        if c != cfg.num_channels:
            raise ValueError(f"pixel_values has {c} channels, the model expects {cfg.num_channels}")
        if not interpolate_pos_encoding and (h, w) != cfg.image_hw:
            raise ValueError(f"pixel_values are {h}x{w} but the model was trained at {cfg.image_hw[0]}x"
                             f"{cfg.image_hw[1]}; resize them or pass interpolate_pos_encoding=True")
        if h < cfg.patch_size or w < cfg.patch_size:
            raise ValueError(f"an image of {h}x{w} is smaller than one {cfg.patch_size}x{cfg.patch_size} patch")

    def position_embeddings(self, h, w):
        """(1 + N, D) position table for an h x w input.

        At another resolution the patch part is resized bicubically as a 2-D grid, following
        DINO and HF's interpolate_pos_encoding; the [CLS] position is kept as is.
        """
        cfg, p = self.config, self.config.patch_size
        if (h // p, w // p) == cfg.grid:
            return self.pos_embed
        n_cls = int(cfg.class_token)
        cls_pos, patch_pos = self.pos_embed[:n_cls], self.pos_embed[n_cls:]
        rows, cols = cfg.grid
        grid = rearrange(patch_pos, "(gh gw) d -> 1 d gh gw", gh=rows, gw=cols)
        grid = F.interpolate(grid, size=(h // p, w // p), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, rearrange(grid, "1 d gh gw -> (gh gw) d")], dim=0)

    def embed(self, pixel_values, interpolate_pos_encoding=False):
        """pixel_values (B, C, H, W) -> token embeddings (B, [1 +] N, D), positions added."""
        self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        pixel_values = pixel_values.to(self.patch_embed.proj.weight.dtype)
        x = self.patch_embed(pixel_values)  # (B, N, D)
        if self.cls_token is not None:
            cls = self.cls_token.expand(x.shape[0], 1, -1)  # (B, 1, D)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + N, D)
        return x + self.position_embeddings(*pixel_values.shape[-2:])

    def encoder_input(self, pixel_values, interpolate_pos_encoding=False):
        """embed, then the pre-encoder norm where the tower has one (CLIP): hidden_states[0]."""
        x = self.embed(pixel_values, interpolate_pos_encoding)
        return x if self.pre_norm is None else self.pre_norm(x)

    def forward(self, pixel_values, interpolate_pos_encoding=False, output_hidden_states=False):
        cfg = self.config
        x = self.encoder_input(pixel_values, interpolate_pos_encoding)
        x, hidden_states = self.encoder(x, output_hidden_states=output_hidden_states)
        if cfg.final_norm in ("sequence", "both"):
            x = self.final_norm(x)
        out = ModelOutput(last_hidden_state=x)  # (B, [1 +] N, D)
        if cfg.pooler == "dense_tanh":
            out.pooler_output = self.pooler_act(self.pooler(x[:, 0]))
        elif cfg.pooler == "cls":
            pooled = x[:, 0]  # (B, D)
            if cfg.final_norm in ("pooled", "both"):
                # CLIP normalises only the pooled token; BLIP normalises it a second time.
                pooled = self.final_norm(pooled)
            out.pooler_output = pooled
        elif cfg.pooler == "attention":
            out.pooler_output = self.pooler(x)
        if output_hidden_states:
            out.hidden_states = hidden_states
        return out

    def hidden_states_at(self, pixel_values, indices):
        """[hidden_states[k] for k in indices], numbered as forward(output_hidden_states=True) numbers
        them, running only the encoder layers up to the deepest one asked for (Encoder.hidden_states_at).
        LLaVA reads layer -2: the last layer, final norm and pooler would be work thrown away (which
        transformers does: it runs the whole tower with output_hidden_states=True)."""
        return self.encoder.hidden_states_at(self.encoder_input(pixel_values), indices)

    def forward_packed(self, pixel_values, grid_thw, output_hidden_states=False, what="pixel_values"):
        """Qwen2-VL: pixel_values (N, C*T*p*p) of every image/video, grid_thw (I, 3) ->
        last_hidden_state (N, D), pooler_output (N / m^2, merger_size) — the merged LM tokens.

        Attention stays inside segments: each temporal slice of each image (Qwen2-VL), or, on the
        windowed layers of Qwen2.5-VL, each window — the patches are then first reordered window
        by window (whole m x m merge units), and the merged tokens put back in reading order."""
        cfg = self.config
        m = cfg.spatial_merge_size
        require_float_pixels(pixel_values, what)
        check_grid(pixel_values, grid_thw, self.patch_embed.patch_dim, m, what)  # what: the input's name in errors
        x = self.patch_embed(pixel_values)[None]  # (1, N, D): one packed sequence
        rows, cols = patch_positions(grid_thw, m)
        cos, sin = vision_rope_2d(rows, cols, cfg.hidden_size // cfg.num_heads, cfg.rope_theta)  # (N, Dh)
        cos, sin = cos[None].to(x.dtype), sin[None].to(x.dtype)
        full = attention_segments(grid_thw)
        segments = [full] * cfg.num_layers
        if cfg.window_size:  # Qwen2.5-VL
            order, windows = window_order(grid_thw, m, cfg.window_size // cfg.patch_size // m)
            patches = (order[:, None] * m * m + torch.arange(m * m)).flatten()  # merge units -> patches
            x, cos, sin = x[:, patches], cos[:, patches], sin[:, patches]
            segments = [full if i in cfg.full_attention_layers else windows for i in range(cfg.num_layers)]
        hidden_states = [x] if output_hidden_states else None
        for layer, lengths in zip(self.encoder.layers, segments):
            x = self.attend(layer, x, lengths, cos, sin)
            if output_hidden_states:
                hidden_states.append(x)
        x = x[0]  # (N, D)
        out = ModelOutput(last_hidden_state=x)
        if self.pooler is not None:
            merged = self.pooler(x)  # (N / m^2, merger_size)
            out.pooler_output = merged[torch.argsort(order)] if cfg.window_size else merged
        if output_hidden_states:
            out.hidden_states = tuple(hidden_states)
        return out

    def attend(self, layer, x, lengths, cos, sin):
        """One encoder layer over a packed (1, N, D) sequence whose segments must not see each other."""
        if self.config.packing == "mask" or len(lengths) == 1:  # readable: one block-diagonal mask
            mask = block_diagonal_mask(lengths, x.device) if len(lengths) > 1 else None
            return layer(x, mask=mask, rope=(cos, sin))
        # fast: each segment on its own, no mask (every other op is per token anyway)
        bounds = _starts(lengths)
        return torch.cat([layer(x[:, a:b], rope=(cos[:, a:b], sin[:, a:b])) for a, b in zip(bounds, bounds[1:])],
                         dim=1)


def _starts(lengths):
    """[0, l0, l0 + l1, ...]: the segment boundaries (HF's cu_seqlens)."""
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out
