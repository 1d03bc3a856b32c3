"""The multimodal projector: vision features (B, N, D_vision) -> the LM's embedding width (B, N, D_text).

LLaVA (Liu et al. 2023) used one Linear; LLaVA-1.5 (Liu et al. 2023b) a two-layer MLP with GELU.
Both are one module here, a stack of Linear layers with an activation between them:

    depth 1:  linear_1                            ('linear' in the original repo)
    depth 2:  linear_1 -> act -> linear_2         ('mlp2x_gelu'; HF's LlavaMultiModalProjector)
    depth N:  linear_1 -> act -> ... -> linear_N  ('mlpNx_gelu')

The first Linear maps D_vision -> D_text, every later one D_text -> D_text. Parameters are named
linear_1 .. linear_N as in HF, so a transformers checkpoint maps by name (the original repo's
nn.Sequential keys mm_projector.0, mm_projector.2, ... would be linear_1, linear_2, ...).
"""
import math
import re

from einops import rearrange
from torch import nn

from ..blocks.activations import get_activation


class Projector(nn.Module):
    def __init__(self, in_dim, out_dim, depth=2, act="gelu", bias=True):
        super().__init__()
        if depth < 1:
            raise ValueError(f"a projector needs at least one Linear layer, got depth={depth}")
        self.depth, self.act_name = depth, act
        self.act = get_activation(act)
        for i in range(depth):
            self.add_module(f"linear_{i + 1}", nn.Linear(in_dim if i == 0 else out_dim, out_dim, bias=bias))

    def linears(self):
        return [getattr(self, f"linear_{i + 1}") for i in range(self.depth)]

    def forward(self, x):  # (..., D_vision) -> (..., D_text)
        layers = self.linears()
        x = layers[0](x)
        for layer in layers[1:]:
            x = layer(self.act(x))
        return x


class PixelShuffleProjector(nn.Module):
    """The downsample projector: space-to-depth, then LayerNorm + linear_1 -> act -> linear_2.

    Each factor x factor block of neighbouring patch features becomes one token with their features
    side by side (pixel shuffle, as in InternVL / Idefics3's connector), so an s x s grid of N tokens
    becomes (s / factor)^2 = N / factor^2 tokens of width factor^2 * D_vision:

        (B, s*s, D) -> (B, (s/f)*(s/f), f*f*D) -> norm -> linear_1 -> act -> linear_2 -> (B, N/f^2, D_text)
    """

    def __init__(self, in_dim, out_dim, factor=2, act="gelu", bias=True):
        super().__init__()
        if factor < 1:
            raise ValueError(f"the downsample factor must be at least 1, got {factor}")
        self.factor = factor
        wide = in_dim * factor * factor
        self.norm = nn.LayerNorm(wide)
        self.linear_1 = nn.Linear(wide, out_dim, bias=bias)
        self.act = get_activation(act)
        self.linear_2 = nn.Linear(out_dim, out_dim, bias=bias)

    def space_to_depth(self, x):  # (B, s*s, D) -> (B, (s/f)^2, f*f*D)
        n, f = x.shape[1], self.factor
        side = math.isqrt(n)
        if side * side != n or side % f:
            raise ValueError(f"pixel shuffle needs a square grid whose side divides by {f}; got {n} tokens "
                             f"(drop [CLS] first)")
        return rearrange(x, "b (h fh w fw) d -> b (h w) (fh fw d)", fh=f, fw=f, w=side // f)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(self.norm(self.space_to_depth(x)))))


_MLP = re.compile(r"mlp(\d+)x_(\w+)\Z")
_SHUFFLE = re.compile(r"pixel_shuffle(\d+)x_(\w+)\Z")


def build_projector(spec, in_dim, out_dim, bias=True):
    """The original repo's `mm_projector_type` strings: 'linear', 'mlp2x_gelu', 'mlp3x_gelu', ...

    ('identity' is accepted when in_dim == out_dim and returns nn.Identity.) The activation after
    'x_' may be any name minivlm.blocks.activations knows; the original only ever used gelu.
    """
    if spec == "identity":
        if in_dim != out_dim:
            raise ValueError(f"an 'identity' projector needs equal widths, got vision {in_dim} and text {out_dim}")
        return nn.Identity()
    if spec == "linear":
        return Projector(in_dim, out_dim, depth=1, bias=bias)
    m = _MLP.match(spec or "")
    if m:
        return Projector(in_dim, out_dim, depth=int(m.group(1)), act=m.group(2), bias=bias)
    m = _SHUFFLE.match(spec or "")
    if m:  # minivlm's downsample projector, e.g. 'pixel_shuffle2x_gelu'
        return PixelShuffleProjector(in_dim, out_dim, factor=int(m.group(1)), act=m.group(2), bias=bias)
    raise ValueError(f"unknown projector spec {spec!r}; expected 'linear', 'identity', 'mlp<N>x_<act>' "
                     f"such as 'mlp2x_gelu' or 'pixel_shuffle<F>x_<act>'")
