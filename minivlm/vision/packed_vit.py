"""Qwen2-VL's vision tower: the shared Encoder over ONE packed sequence of every image and video.

    pixel_values (N, C*T*p*p), grid_thw (I, 3)
      -> PatchEmbedding3D                                       (N, D)
      -> 2-D RoPE from each patch's (row, col), in float32        (N, Dh)
      -> the Encoder's layers, attention kept inside segments   (N, D)
      -> PatchMerger: m x m neighbours -> one LM token           (N / m^2, merger_size)

Segments are each temporal slice of each image (Qwen2-VL), or, on the windowed layers of Qwen2.5-VL,
each window: the patches are then first reordered window by window (whole m x m merge units), and
the merged tokens put back in reading order. The pieces (patch order, windows, masks) are in
vision/packed.py. Every index is built on the patches' device, whatever device grid_thw is on.
"""
import torch
from torch import Tensor, nn

from ..blocks.rotary import vision_rope_2d
from ..blocks.transformer import EncoderLayer
from ..outputs import ModelOutput
from .config import VisionConfig
from .packed import (PatchEmbedding3D, PatchMerger, attention_segments, block_diagonal_mask, check_grid,
                     patch_positions, window_order)
from .pixels import require_float_pixels
from .vit import make_encoder

Rope = tuple[Tensor, Tensor]


def segment_bounds(lengths: list[int]) -> list[int]:
    """[0, l0, l0 + l1, ...]: the segment boundaries (HF's cu_seqlens)."""
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out


def attend_masked(layer: EncoderLayer, x: Tensor, lengths: list[int], rope: Rope) -> Tensor:
    """One layer over the packed (1, N, D) sequence with one block-diagonal mask: the readable picture."""
    mask = block_diagonal_mask(lengths, x.device) if len(lengths) > 1 else None
    return layer(x, mask=mask, rope=rope)


def attend_split(layer: EncoderLayer, x: Tensor, lengths: list[int], rope: Rope) -> Tensor:
    """The same numbers with each segment run on its own and no mask (every other op is per token)."""
    cos, sin = rope
    bounds = segment_bounds(lengths)
    return torch.cat([layer(x[:, a:b], rope=(cos[:, a:b], sin[:, a:b])) for a, b in zip(bounds, bounds[1:])], dim=1)


PACKING = {"mask": attend_masked, "split": attend_split}  # VisionConfig.packing


class PackedVisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if not cfg.packed or cfg.pooler != "patch_merger":
            raise ValueError("PackedVisionTransformer is Qwen2-VL's tower: packed=True, pooler='patch_merger'")
        self.config = cfg
        D = cfg.hidden_size
        self.patch_embed = PatchEmbedding3D(cfg.num_channels, cfg.temporal_patch_size, cfg.patch_size, D)
        self.encoder = make_encoder(cfg)
        self.pooler = PatchMerger(D, cfg.merger_size or D, cfg.spatial_merge_size, eps=cfg.layer_norm_eps, norm=cfg.norm)

    def forward(self, pixel_values: Tensor, grid_thw: Tensor, output_hidden_states: bool = False,
                what: str = "pixel_values") -> ModelOutput:
        """pixel_values (N, C*T*p*p) of every image/video, grid_thw (I, 3) -> last_hidden_state (N, D),
        pooler_output (N / m^2, merger_size): the merged LM tokens. what: the input's name in errors."""
        cfg = self.config
        m = cfg.spatial_merge_size
        require_float_pixels(pixel_values, what)
        check_grid(pixel_values, grid_thw, self.patch_embed.patch_dim, m, what)
        x = self.patch_embed(pixel_values)[None]  # (1, N, D): one packed sequence
        rows, cols = (t.to(x.device) for t in patch_positions(grid_thw, m))
        # float32 angles, kept float32: the rotation upcasts q, k as HF's apply_rotary_pos_emb_vision does
        cos, sin = vision_rope_2d(rows, cols, cfg.hidden_size // cfg.num_heads, cfg.rope_theta)  # (N, Dh)
        cos, sin = cos[None], sin[None]
        full = attention_segments(grid_thw)
        segments = [full] * cfg.num_layers
        if cfg.window_size:  # Qwen2.5-VL
            order, windows = window_order(grid_thw, m, cfg.window_size // cfg.patch_size // m)
            order = order.to(x.device)  # (N / m^2,) merge units, window by window
            patches = (order[:, None] * m * m + torch.arange(m * m, device=x.device)).flatten()  # units -> patches
            x, cos, sin = x[:, patches], cos[:, patches], sin[:, patches]
            segments = [full if i in cfg.full_attention_layers else windows for i in range(cfg.num_layers)]
        attend = PACKING[cfg.packing]
        hidden_states = [x] if output_hidden_states else None
        for layer, lengths in zip(self.encoder.layers, segments):
            x = attend(layer, x, lengths, (cos, sin))
            if output_hidden_states:
                hidden_states.append(x)
        x = x[0]  # (N, D)
        merged = self.pooler(x)  # (N / m^2, merger_size)
        if cfg.window_size:
            merged = merged[torch.argsort(order)]  # back to reading order
        out = ModelOutput(last_hidden_state=x, pooler_output=merged)
        if output_hidden_states:
            out.hidden_states = tuple(hidden_states)
        return out

