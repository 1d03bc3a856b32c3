"""In-place activations and residual adds at inference, as a module swap.

At inference nobody else holds a layer's intermediate tensors, so an MLP's activation can overwrite
fc1's output and a residual add can go into the sublayer's own fresh output: the same kernels, the
same bits (a + b == b + a in floating point), and one (B, N, hidden) or (B, N, D) tensor fewer per
layer. On the CPU a fresh tensor that large is often fresh pages from the OS, each faulted in on its
first write. `inplace_inference(model)` swaps the readable MLP / SwiGLU / layer classes for these
subclasses (same parameters, same state_dict keys); `readable_inference(model)` swaps them back.

Each swap takes its in-place route only where that is legal and equal: no autograd on the tensor, and,
for the residual, the sublayer's output in the residual stream's dtype (under bf16 autocast with
fp32 weights the sum must be fp32: x + f(x) promotes, an in-place add into f(x) would not).
tests/test_fast_forward.py proves each equal, bit for bit, to the module it replaces.
"""
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..blocks.activations import gelu_tanh, quick_gelu
from ..blocks.mlp import MLP, SwiGLU
from ..blocks.transformer import EncoderLayer
from ..text.llama import DecoderLayer


def quick_gelu_(x: Tensor) -> Tensor:
    # x * sigmoid(1.702 x), the formula's three ops bit for bit, with one temporary for sigmoid(1.702 x)
    # (silu(1.702 x) / 1.702 would need none, but rounds twice more than transformers does).
    return x.mul_(torch.mul(x, 1.702).sigmoid_())


def gelu_(x: Tensor) -> Tensor:
    return torch.ops.aten.gelu_(x)


def gelu_tanh_(x: Tensor) -> Tensor:
    return torch.ops.aten.gelu_(x, approximate="tanh")


def silu_(x: Tensor) -> Tensor:
    return F.silu(x, inplace=True)


# The readable activation (blocks/activations.py) -> the same kernel overwriting its input.
INPLACE: dict[Callable, Callable] = {F.gelu: gelu_, gelu_tanh: gelu_tanh_, quick_gelu: quick_gelu_, F.silu: silu_,
                                     F.relu: F.relu_, torch.tanh: torch.tanh_}


def gated(act: Callable, act_: Callable | None, gate: Tensor, up: Tensor) -> Tensor:
    """act(gate) * up, written into gate where act_ (the in-place act) is given and gate needs no grad."""
    if act_ is None or gate.requires_grad:
        return act(gate) * up
    return act_(gate).mul_(up)


def residual(x: Tensor, h: Tensor) -> Tensor:
    """x + h, added into h (the sublayer's own fresh output) where that is legal and gives x + h's dtype."""
    if h.requires_grad or h.dtype != x.dtype:
        return x + h
    return h.add_(x)


class InplaceMLP(MLP):
    def forward(self, x: Tensor) -> Tensor:  # (B, N, D) -> (B, N, D)
        h = self.fc1(x)  # (B, N, hidden): the largest tensor of the layer, overwritten by the activation
        return self.fc2(self.act(h) if h.requires_grad else self.act_(h))


class InplaceSwiGLU(SwiGLU):
    def forward(self, x: Tensor) -> Tensor:  # (B, N, D) -> (B, N, D)
        return self.down_proj(gated(self.act, self.act_, self.gate_proj(x), self.up_proj(x)))


class InplaceEncoderLayer(EncoderLayer):
    def forward(self, x: Tensor, mask: Tensor | None = None, rope=None) -> Tensor:
        x = residual(x, self.attn(self.norm1(x), mask=mask, rope=rope))
        return residual(x, self.mlp(self.norm2(x)))


class InplaceDecoderLayer(DecoderLayer):
    def forward(self, x: Tensor, mask: Tensor | None, rope, cache=None, causal: bool = False) -> Tensor:
        x = residual(x, self.attn(self.norm1(x), mask=mask, rope=rope, cache=cache, causal=causal))
        return residual(x, self.mlp(self.norm2(x)))


SWAPS = {MLP: InplaceMLP, SwiGLU: InplaceSwiGLU, EncoderLayer: InplaceEncoderLayer, DecoderLayer: InplaceDecoderLayer}


def inplace_inference(model: nn.Module) -> nn.Module:
    """Swap every readable MLP, SwiGLU (fused or not) and pre-norm layer under `model` for its in-place
    form (an MLP whose activation has no in-place kernel, e.g. gelu_fast, stays); returns the model."""
    for module in model.modules():
        if isinstance(module, (MLP, SwiGLU)):
            act_ = INPLACE.get(module.act)
            if act_ is None:
                continue
            module.act_ = act_
        if type(module) in SWAPS:  # a FusedSwiGLU reads act_ itself
            module.__class__ = SWAPS[type(module)]
    return model


def readable_inference(model: nn.Module) -> nn.Module:
    """The inverse of inplace_inference."""
    readable = {swap: plain for plain, swap in SWAPS.items()}
    for module in model.modules():
        if type(module) in readable:
            module.__class__ = readable[type(module)]
        if "act_" in module.__dict__:
            del module.act_
    return model
