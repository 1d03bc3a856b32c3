"""LayerNorm (torch's own) and RMSNorm (LLaMA).

RMSNorm (Zhang & Sennrich 2019) drops LayerNorm's mean subtraction and bias: x / rms(x) * w.
LLaMA computes it in float32 and casts back before the weight multiply; we mirror that order
so bf16 results match the reference bit for bit as far as possible.
"""
import torch
from torch import nn

LayerNorm = nn.LayerNorm


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # (..., D)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}"
