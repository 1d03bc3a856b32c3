"""RMSNorm (LLaMA), and `make_norm` picking it or torch's LayerNorm from a config's switch.

RMSNorm (Zhang & Sennrich 2019) drops LayerNorm's mean subtraction and bias: x / rms(x) * w.
LLaMA computes it in float32 and casts back before the weight multiply; we mirror that order
so bf16 results match the reference bit for bit as far as possible.
"""
import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:  # (..., D)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """"layer" (LayerNorm) or "rms" (RMSNorm: Qwen2.5-VL's vision blocks)."""
    if kind not in ("layer", "rms"):
        raise ValueError(f"norm must be 'layer' or 'rms', got {kind!r}")
    return nn.LayerNorm(dim, eps=eps) if kind == "layer" else RMSNorm(dim, eps=eps)
