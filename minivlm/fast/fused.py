"""Fused projections, as a module swap: layers that read the same input run as one matmul.

Attention's q, k and v projections all read x; SwiGLU's gate and up projections too. Stacking their
weights row-wise, [W_q; W_k; W_v] x = [W_q x; W_k x; W_v x], gives the same numbers from one larger
matmul: one kernel launch and one pass over x instead of three, which is what a decode step (one
token, many small matmuls) is short of. HF checkpoints store the separate tensors, and the readable
modules keep them: `fuse_projections(model)` swaps every self-attention and SwiGLU for its fused
form (moving the weights, not copying them) and `unfuse_projections(model)` swaps them back. While
fused, the state_dict says qkv_proj / gate_up_proj: unfuse before saving HF names.
Works on float and int8 (fast/quant.py) projections alike, in either order.
tests/test_fast_decode.py proves the fused model gives the readable model's logits and greedy ids.
"""
import torch
from torch import Tensor, nn

from ..blocks.attention import Attention, split_heads
from ..blocks.mlp import SwiGLU
from ..blocks.rotary import rotate
from .inplace import InplaceSwiGLU, gated
from .quant import Int8Linear


def stack_linears(linears: list[nn.Module]) -> nn.Module:
    """Linear (or Int8Linear) layers with one input width -> one layer whose outputs are theirs, in order."""
    first = linears[0]
    bias = None if first.bias is None else torch.cat([m.bias.detach() for m in linears])
    weight = torch.cat([m.weight.detach() for m in linears])  # (sum of outputs, in)
    if isinstance(first, Int8Linear):
        return Int8Linear.from_parts(weight, torch.cat([m.scale for m in linears]), bias)
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=first.weight.requires_grad)
    if bias is not None:
        fused.bias = nn.Parameter(bias, requires_grad=first.bias.requires_grad)
    return fused


def split_linear(fused: nn.Module, sizes: list[int]) -> list[nn.Module]:
    """The inverse of stack_linears: one layer -> layers of `sizes` outputs each."""
    weights = fused.weight.detach().split(sizes)
    biases = fused.bias.detach().split(sizes) if fused.bias is not None else [None] * len(sizes)
    if isinstance(fused, Int8Linear):
        scales = fused.scale.split(sizes)
        return [Int8Linear.from_parts(w.clone(), s.clone(), None if b is None else b.clone())
                for w, s, b in zip(weights, scales, biases)]
    parts = []
    for w, b in zip(weights, biases):
        m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta")
        m.weight = nn.Parameter(w.clone(), requires_grad=fused.weight.requires_grad)
        if b is not None:
            m.bias = nn.Parameter(b.clone(), requires_grad=fused.bias.requires_grad)
        parts.append(m)
    return parts


class FusedAttention(Attention):
    """Self-attention whose q | k | v come from one matmul (qkv_proj), and q, k (adjacent there) are
    rotated in one pass: the same numbers as rotating each."""

    def heads(self, x: Tensor, source: Tensor, rope=None) -> tuple[Tensor, Tensor, Tensor]:
        if source is not x:
            raise ValueError("a fused q|k|v projection reads one stream: cross-attention is never fused")
        heads = split_heads(self.qkv_proj(x), self.head_dim)  # (B, H + 2 H_kv, L, Dh)
        qk = heads[:, :self.num_heads + self.num_kv_heads]
        if rope is not None:
            qk = rotate(qk, *rope)
        return qk[:, :self.num_heads], qk[:, self.num_heads:], heads[:, self.num_heads + self.num_kv_heads:]


class FusedSwiGLU(SwiGLU):
    """SwiGLU with gate | up from one matmul (gate_up_proj); overwriting gate in place where the
    in-place swap (fast/inplace.py) gave it an `act_`."""

    def forward(self, x: Tensor) -> Tensor:  # (B, N, D) -> (B, N, D)
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (B, N, hidden) each
        return self.down_proj(gated(self.act, getattr(self, "act_", None), gate, up))


def qkv_sizes(attn: Attention) -> list[int]:
    return [attn.num_heads * attn.head_dim] + [attn.num_kv_heads * attn.head_dim] * 2


def fuse_projections(model: nn.Module) -> nn.Module:
    """Swap every self-attention and SwiGLU under `model` for its fused form, in place; returns the model.
    Cross-attentions (their keys and values read another stream) stay as they are."""
    for module in model.modules():
        if type(module) is Attention and not module.cross:
            module.qkv_proj = stack_linears([module.q_proj, module.k_proj, module.v_proj])
            del module.q_proj, module.k_proj, module.v_proj
            module.__class__ = FusedAttention
        elif isinstance(module, SwiGLU) and not isinstance(module, FusedSwiGLU):
            module.gate_up_proj = stack_linears([module.gate_proj, module.up_proj])
            del module.gate_proj, module.up_proj
            module.__class__ = FusedSwiGLU
    return model


def unfuse_projections(model: nn.Module) -> nn.Module:
    """The inverse of fuse_projections: the HF modules and state_dict keys back."""
    for module in model.modules():
        if isinstance(module, FusedAttention):
            module.q_proj, module.k_proj, module.v_proj = split_linear(module.qkv_proj, qkv_sizes(module))
            del module.qkv_proj
            module.__class__ = Attention
        elif isinstance(module, FusedSwiGLU):
            hidden = module.gate_up_proj.out_features // 2
            module.gate_proj, module.up_proj = split_linear(module.gate_up_proj, [hidden, hidden])
            del module.gate_up_proj
            module.__class__ = InplaceSwiGLU if hasattr(module, "act_") else SwiGLU
    return model
