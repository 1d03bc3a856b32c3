"""The one-row CPU matvec route, as a module swap.

At batch 1 every projection of a decode step multiplies one token's vector by a weight matrix:
y = W x, a matrix-vector product whose speed is how fast W streams from memory. On some CPUs torch
sends F.linear's bf16 one-row case through its general matmul, which reads bf16 weights below the
machine's bandwidth, while torch.mv reaches a kernel built for exactly y = W x. Whether torch.mv
gives F.linear's bits and is faster depends on the CPU's kernels, so it is decided per machine and
per shape by the probe in fast/cpu.py (`matvec_route_ok`); figures are in docs/fast.md.

`use_matvec(model)` swaps every nn.Linear for MatvecLinear (an nn.Linear subclass: same parameters,
same state_dict keys), which asks the probe at each one-row call (a cached lookup: the model's dtype
may change after the swap, and MINIVLM_MATVEC=off must hold at once); `plain_linears(model)` swaps
them back.
"""
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .cpu import matvec_route_ok  # the probe: equal bits and faster, measured once per shape


def takes_matvec(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """A single row (x (..., in) holding one vector) on the CPU, in eager mode (under torch.compile
    inductor rewrites torch.mv into its own loop, slower than the matmul it picks for F.linear), of a
    (dtype, shape) this machine's probe found bit-equal to F.linear and faster, bias-free."""
    return (x.device.type == "cpu" and weight.dtype == x.dtype and x.numel() == x.shape[-1]
            and not torch.compiler.is_compiling() and matvec_route_ok(x.dtype, weight, bias))


class MatvecLinear(nn.Linear):
    """An nn.Linear whose one-row CPU inputs use torch.mv where the probe allows it (never with a bias)."""

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        if not takes_matvec(x, self.weight, self.bias):
            return F.linear(x, self.weight, self.bias)
        v = x.reshape(-1)  # (in,)
        return torch.mv(self.weight, v).view(*x.shape[:-1], -1)  # (out,): the probe passes bias-free layers only


def use_matvec(model: nn.Module) -> nn.Module:
    """Swap every nn.Linear under `model` (not its subclasses, which do work of their own) for MatvecLinear."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = MatvecLinear
    return model


def plain_linears(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if type(module) is MatvecLinear:
            module.__class__ = nn.Linear
    return model
