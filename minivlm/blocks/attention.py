"""Multi-head attention, written once for every model in minivlm.

Self-attention (ViT, CLIP, LLaMA), cross-attention (BLIP's text attending to the image), causal
and padding masks, grouped-query KV heads (LLaMA 2/3) and rotary embeddings all go through this
one module. Two interchangeable kernels compute the same thing:

* "manual": scores = q k^T * scale, mask, softmax, weighted sum of v — the textbook formula;
* "sdpa":   torch's fused `F.scaled_dot_product_attention`, the fast path.

tests/test_blocks.py proves them equal. This is the one switch in the readable modules (DESIGN.md):
`set_attention_impl("manual")` for every Attention, or `impl=` on one. Every other speed-up is a
module swap applied from outside (minivlm/fast/).
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masks import causal_mask, combine
from .rotary import apply_rotary

Rope = tuple[Tensor, Tensor]

_IMPL = {"name": "sdpa"}


def set_attention_impl(name: str) -> None:
    """Choose the kernel for every Attention module that does not set its own."""
    if name not in ("sdpa", "manual"):
        raise ValueError(f"attention impl must be 'sdpa' or 'manual', got {name!r}")
    _IMPL["name"] = name


def attention_probs(q: Tensor, k: Tensor, mask: Tensor | None = None, scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale) over the keys a query may see: (B, H, Lq, Lk), float32."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale  # (B, H, Lq, Lk)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    if mask is not None:
        # A query that may see no key at all (a padded row) gets zeros, as sdpa gives it.
        probs = probs.masked_fill(~mask, 0.0)
    return probs


def repeat_kv_heads(k: Tensor, num_heads: int) -> Tensor:
    """(B, H_kv, L, Dh) -> (B, H, L, Dh): each KV head serves H / H_kv consecutive query heads."""
    groups = num_heads // k.shape[1]
    return k if groups == 1 else k.repeat_interleave(groups, dim=1)


def attention_manual(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None,
                     dropout_p: float = 0.0, causal: bool = False) -> Tensor:
    """q (B, H, Lq, Dh), k/v (B, H_kv, Lk, Dh), mask bool broadcastable to (B, H, Lq, Lk);
    causal=True (with Lq == Lk): query i sees keys 0..i, as causal_mask builds it."""
    if causal:
        mask = combine(causal_mask(q.shape[2], k.shape[2], device=q.device), mask)
    k, v = repeat_kv_heads(k, q.shape[1]), repeat_kv_heads(v, q.shape[1])
    probs = F.dropout(attention_probs(q, k, mask, scale), p=dropout_p).to(v.dtype)
    return torch.matmul(probs, v)  # (B, H, Lq, Dh)


def attention_sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, scale: float | None = None,
                   dropout_p: float = 0.0, causal: bool = False) -> Tensor:
    # enable_gqa lets the fused kernel share KV heads without materialising the repeated copies;
    # is_causal (no mask tensor) lets it use its flash kernel and skip the masked-out half.
    if causal and mask is not None:
        mask, causal = combine(causal_mask(q.shape[2], k.shape[2], device=q.device), mask), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale,
                                          is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])


KERNELS = {"manual": attention_manual, "sdpa": attention_sdpa}


def split_heads(x: Tensor, head_dim: int) -> Tensor:  # (B, L, H*Dh) -> (B, H, L, Dh): a view, no copy
    return x.unflatten(-1, (-1, head_dim)).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:  # (B, H, L, Dh) -> (B, L, H*Dh); a copy only when L > 1
    return x.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """q/k/v projections -> heads -> (rotary) -> (cache) -> kernel -> merge heads -> o_proj.

    num_kv_heads < num_heads gives grouped-query attention: each KV head serves
    num_heads / num_kv_heads consecutive query heads (Ainslie et al. 2023).
    kv_dim given makes it a cross-attention whose keys/values come from another stream (`context`).
    """

    def __init__(self, dim: int, num_heads: int, *, num_kv_heads: int | None = None, head_dim: int | None = None,
                 kv_dim: int | None = None, qkv_bias: bool = True, out_bias: bool = True, scale: float | None = None,
                 dropout: float = 0.0, impl: str | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = head_dim or dim // num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        self.scale = self.head_dim ** -0.5 if scale is None else scale
        self.dropout = dropout
        self.impl = impl  # None: follow set_attention_impl
        self.cross = kv_dim is not None  # keys and values read another stream (fast/fused.py never fuses these)
        kv_dim = kv_dim or dim
        self.q_proj = nn.Linear(dim, num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(kv_dim, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(kv_dim, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, dim, bias=out_bias)

    def heads(self, x: Tensor, source: Tensor, rope: Rope | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, Lq, D), source (B, Lk, D_kv) -> q (B, H, Lq, Dh), k and v (B, H_kv, Lk, Dh), rotated."""
        q = split_heads(self.q_proj(x), self.head_dim)
        k = split_heads(self.k_proj(source), self.head_dim)
        v = split_heads(self.v_proj(source), self.head_dim)
        if rope is not None:
            q, k = apply_rotary(q, k, *rope)
        return q, k, v

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None, rope: Rope | None = None,
                cache=None, causal: bool = False) -> Tensor:
        """x (B, Lq, D); context (B, Lk, D_kv) or None for self-attention; mask bool (B|1, 1|H, Lq, Lk);
        rope = (cos, sin) each (B, Lq, Dh); cache = a layer's KV cache that keeps k, v across calls;
        causal=True: also hide later keys (Lq == Lk), without a mask tensor on the sdpa path."""
        q, k, v = self.heads(x, x if context is None else context, rope)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H_kv, T, Dh): all positions so far
        kernel = KERNELS[self.impl or _IMPL["name"]]
        out = kernel(q, k, v, mask=mask, scale=self.scale, dropout_p=self.dropout if self.training else 0.0,
                     causal=causal)  # (B, H, Lq, Dh)
        return self.o_proj(merge_heads(out))  # (B, Lq, D)

    def forward_with_probs(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None,
                           cache=None) -> tuple[Tensor, Tensor]:
        """forward's output and the attention map (B, H, Lq, Lk), by the by-hand formula: for pictures."""
        q, k, v = self.heads(x, x if context is None else context)
        if cache is not None:
            k, v = cache.update(k, v)
        probs = attention_probs(q, repeat_kv_heads(k, self.num_heads), mask, self.scale)
        out = torch.matmul(probs.to(v.dtype), repeat_kv_heads(v, self.num_heads))
        return self.o_proj(merge_heads(out)), probs

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"impl={self.impl or 'global'}")
