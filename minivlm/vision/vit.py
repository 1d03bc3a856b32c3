"""The Vision Transformer (Dosovitskiy et al. 2020), the one vision tower of minivlm.

    image (B, 3, H, W)
      -> patchify: a conv with kernel = stride = patch size      (B, N, D), N = H/p * W/p
      -> [CLS] token prepended (if class_token)                 (B, 1 + N, D)
      -> + learned 1-D position embeddings
      -> (pre_norm) -> pre-norm encoder layers -> final norm
      -> pooled vector (the pooler switch)

CLIP, SigLIP and BLIP towers are this module with switches flipped (see vision/config.py); the
switches are resolved once, here in __init__, into the modules forward calls (the pooler, where the
final norm goes). Qwen2-VL's packed tower shares the Encoder (vision/packed_vit.py).
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..blocks.activations import get_activation
from ..blocks.transformer import Encoder
from ..outputs import ModelOutput
from .config import VisionConfig
from .pooling import AttentionPoolingHead
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

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, N, D)
        return rearrange(self.proj(pixel_values), "b d gh gw -> b (gh gw) d")


def make_encoder(cfg: VisionConfig) -> Encoder:
    """The stack of pre-norm layers every tower here shares (vit.py, packed_vit.py)."""
    return Encoder(cfg.num_layers, dim=cfg.hidden_size, num_heads=cfg.num_heads, mlp_dim=cfg.intermediate_size,
                   act=cfg.hidden_act, eps=cfg.layer_norm_eps, qkv_bias=cfg.qkv_bias, dropout=cfg.attention_dropout,
                   norm=cfg.norm, gated_mlp=cfg.gated_mlp)


class DenseTanhPooler(nn.Linear):
    """ViT's pooler: act(W x[CLS] + b). An nn.Linear itself, so its weights keep the key `pooler.weight`."""

    def __init__(self, dim: int, out_dim: int, act: str):
        super().__init__(dim, out_dim)
        self.act = get_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1 + N, D) -> (B, out_dim)
        return self.act(super().forward(x[:, 0]))


class ClsPooler(nn.Module):
    """The [CLS] token's last state, normalised by the tower's final norm where the config says so
    (CLIP normalises only this token; BLIP normalises it a second time)."""

    def __init__(self, norm: nn.Module | None):
        super().__init__()
        # A tuple, not an attribute: the norm's weights belong to the tower (state_dict key final_norm).
        self.norm = (norm,) if norm is not None else ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1 + N, D) -> (B, D)
        pooled = x[:, 0]
        for norm in self.norm:
            pooled = norm(pooled)
        return pooled


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if cfg.packed:
            raise ValueError("a packed tower (Qwen2-VL) is PackedVisionTransformer (vision/packed_vit.py)")
        self.config = cfg
        D = cfg.hidden_size
        self.patch_embed = PatchEmbedding(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(cfg.num_positions, D))  # (1 + N, D)
        self.cls_token = nn.Parameter(torch.zeros(D)) if cfg.class_token else None
        self.pre_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps) if cfg.pre_norm else nn.Identity()
        self.encoder = make_encoder(cfg)
        self.final_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps) if cfg.final_norm != "none" else None
        # where the final norm goes: on every token ("sequence", "both") and / or the pooled one ("pooled", "both")
        self.norm_tokens = cfg.final_norm in ("sequence", "both")
        pooled_norm = self.final_norm if cfg.final_norm in ("pooled", "both") else None
        poolers = {"dense_tanh": lambda: DenseTanhPooler(D, cfg.pooler_output_size or D, cfg.pooler_act),
                   "cls": lambda: ClsPooler(pooled_norm),
                   "attention": lambda: AttentionPoolingHead(cfg),  # SigLIP's MAP head
                   "none": lambda: None}
        if cfg.pooler not in poolers:
            raise ValueError(f"a VisionTransformer's pooler is one of {sorted(poolers)}, got {cfg.pooler!r}")
        self.pooler = poolers[cfg.pooler]()

    def check_pixel_values(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool) -> None:
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

    def position_embeddings(self, h: int, w: int) -> torch.Tensor:
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

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """pixel_values (B, C, H, W) -> token embeddings (B, [1 +] N, D), positions added."""
        self.check_pixel_values(pixel_values, interpolate_pos_encoding)
        pixel_values = pixel_values.to(self.patch_embed.proj.weight.dtype)
        x = self.patch_embed(pixel_values)  # (B, N, D)
        if self.cls_token is not None:
            cls = self.cls_token.expand(x.shape[0], 1, -1)  # (B, 1, D)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + N, D)
        return x + self.position_embeddings(*pixel_values.shape[-2:])

    def encoder_input(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """embed, then the pre-encoder norm where the tower has one (CLIP): hidden_states[0]."""
        return self.pre_norm(self.embed(pixel_values, interpolate_pos_encoding))

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False,
                output_hidden_states: bool = False) -> ModelOutput:
        x = self.encoder_input(pixel_values, interpolate_pos_encoding)
        x, hidden_states = self.encoder(x, output_hidden_states=output_hidden_states)
        if self.norm_tokens:
            x = self.final_norm(x)
        out = ModelOutput(last_hidden_state=x)  # (B, [1 +] N, D)
        if self.pooler is not None:
            out.pooler_output = self.pooler(x)  # (B, D)
        if output_hidden_states:
            out.hidden_states = hidden_states
        return out

    def hidden_states_at(self, pixel_values: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        """[hidden_states[k] for k in indices], numbered as forward(output_hidden_states=True) numbers
        them, running only the encoder layers up to the deepest one asked for (Encoder.hidden_states_at).
        LLaVA reads layer -2: the last layer, final norm and pooler would be work thrown away (which
        transformers does: it runs the whole tower with output_hidden_states=True)."""
        return self.encoder.hidden_states_at(self.encoder_input(pixel_values), indices)
