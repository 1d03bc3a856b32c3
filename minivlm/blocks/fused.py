"""Fused projections: several nn.Linear layers that read the same input, run as one matmul.

Attention's q, k and v projections all read x; SwiGLU's gate and up projections too. Stacking their
weights row-wise, [W_q; W_k; W_v] x = [W_q x; W_k x; W_v x], gives the same numbers from one larger
matmul — one kernel launch and one pass over x instead of three, which is what a decode step (one
token, many small matmuls) is short of. HF checkpoints store the separate tensors, and the readable
modules keep them: `fuse_projections(model)` builds the fused weights after loading (moving, not
copying, so memory does not grow) and `fuse_projections(model, False)` splits them back.
tests/test_fast_decode.py proves both give the same logits and greedy ids.
"""
import torch
from torch import nn

from .linear import Linear


def stack_linears(linears):
    """nn.Linear layers with one input width -> one nn.Linear whose outputs are theirs, in order."""
    has_bias = linears[0].bias is not None
    w = torch.cat([m.weight.detach() for m in linears])  # (sum of outputs, in)
    fused = Linear(w.shape[1], w.shape[0], bias=has_bias, device="meta")
    fused.weight = nn.Parameter(w, requires_grad=linears[0].weight.requires_grad)
    if has_bias:
        fused.bias = nn.Parameter(torch.cat([m.bias.detach() for m in linears]))
    return fused


def split_linear(fused, sizes):
    """The inverse of stack_linears: one nn.Linear -> nn.Linear layers of `sizes` outputs each."""
    parts = []
    weights = fused.weight.detach().split(sizes)
    biases = fused.bias.detach().split(sizes) if fused.bias is not None else [None] * len(sizes)
    for w, b in zip(weights, biases):
        m = Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
        m.weight = nn.Parameter(w.clone(), requires_grad=fused.weight.requires_grad)
        if b is not None:
            m.bias = nn.Parameter(b.clone())
        parts.append(m)
    return parts


def fuse_projections(model, on=True):
    """Switch every Attention (self-attention) and SwiGLU in `model` to fused (on) or separate
    projections; returns the model. The state_dict keys follow: qkv_proj / gate_up_proj while fused."""
    for module in model.modules():
        if hasattr(module, "fuse"):
            module.fuse(on)
    return model
