"""Multi-head attention, written once for every model in minivlm.

Self-attention (ViT, CLIP, LLaMA), cross-attention (BLIP's text attending to the image), causal
and padding masks, grouped-query KV heads (LLaMA 2/3) and rotary embeddings all go through this
one module. Two interchangeable kernels compute the same thing:

* "manual": scores = q k^T * scale, mask, softmax, weighted sum of v — the textbook formula;
* "sdpa":   torch's fused `F.scaled_dot_product_attention`, the fast path.

tests/test_blocks.py proves them equal. Switch globally with `set_attention_impl("manual")`.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .fused import split_linear, stack_linears
from .linear import Linear
from .masks import causal_mask, combine
from .rotary import apply_rotary, rotate

_IMPL = {"name": "sdpa"}


def set_attention_impl(name):
    """Choose the kernel for every Attention module that does not set its own."""
    if name not in ("sdpa", "manual"):
        raise ValueError(f"attention impl must be 'sdpa' or 'manual', got {name!r}")
    _IMPL["name"] = name


def get_attention_impl():
    return _IMPL["name"]


def attention_probs(q, k, mask=None, scale=None):
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


def repeat_kv_heads(k, num_heads):
    """(B, H_kv, L, Dh) -> (B, H, L, Dh): each KV head serves H / H_kv consecutive query heads."""
    groups = num_heads // k.shape[1]
    return k if groups == 1 else k.repeat_interleave(groups, dim=1)


def attention_manual(q, k, v, mask=None, scale=None, dropout_p=0.0, causal=False):
    """q (B, H, Lq, Dh), k/v (B, H_kv, Lk, Dh), mask bool broadcastable to (B, H, Lq, Lk);
    causal=True (with Lq == Lk): query i sees keys 0..i, as causal_mask builds it."""
    if causal:
        mask = combine(causal_mask(q.shape[2], k.shape[2], device=q.device), mask)
    k, v = repeat_kv_heads(k, q.shape[1]), repeat_kv_heads(v, q.shape[1])
    probs = F.dropout(attention_probs(q, k, mask, scale), p=dropout_p).to(v.dtype)
    return torch.matmul(probs, v)  # (B, H, Lq, Dh)


def attention_sdpa(q, k, v, mask=None, scale=None, dropout_p=0.0, causal=False):
    # enable_gqa lets the fused kernel share KV heads without materialising the repeated copies;
    # is_causal (no mask tensor) lets it use its flash kernel and skip the masked-out half.
    if causal and mask is not None:
        mask, causal = combine(causal_mask(q.shape[2], k.shape[2], device=q.device), mask), False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale,
                                          is_causal=causal, enable_gqa=k.shape[1] != q.shape[1])


KERNELS = {"manual": attention_manual, "sdpa": attention_sdpa}


def split_heads(x, head_dim):  # (B, L, H*Dh) -> (B, H, L, Dh): a view, no copy
    return x.unflatten(-1, (-1, head_dim)).transpose(1, 2)


def merge_heads(x):  # (B, H, L, Dh) -> (B, L, H*Dh); a copy only when L > 1
    return x.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """q/k/v projections -> heads -> (rotary) -> (cache) -> kernel -> merge heads -> o_proj.

    num_kv_heads < num_heads gives grouped-query attention: each KV head serves
    num_heads / num_kv_heads consecutive query heads (Ainslie et al. 2023).
    kv_dim != dim makes it a cross-attention whose keys/values come from another stream.
    """

    def __init__(self, dim, num_heads, *, num_kv_heads=None, head_dim=None, kv_dim=None,
                 qkv_bias=True, out_bias=True, scale=None, dropout=0.0, impl=None):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = head_dim or dim // num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        self.scale = self.head_dim ** -0.5 if scale is None else scale
        self.dropout = dropout
        self.impl = impl  # None: follow set_attention_impl
        kv_dim = kv_dim or dim
        self.q_proj = Linear(dim, num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = Linear(kv_dim, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = Linear(kv_dim, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = Linear(num_heads * self.head_dim, dim, bias=out_bias)
        self.qkv_proj = None  # set by fuse(): q_proj, k_proj, v_proj stacked into one matmul

    def qkv_sizes(self):
        return [self.num_heads * self.head_dim] + [self.num_kv_heads * self.head_dim] * 2

    def project(self, x, source):  # -> q (B, Lq, H*Dh), k and v (B, Lk, H_kv*Dh)
        if self.qkv_proj is None:
            return self.q_proj(x), self.k_proj(source), self.v_proj(source)
        if source is x:  # fused self-attention: one matmul, then the q | k | v columns
            return self.qkv_proj(x).split(self.qkv_sizes(), dim=-1)
        # fused, but queries and keys read different streams: two slices of the stacked weight
        w, b, n = self.qkv_proj.weight, self.qkv_proj.bias, self.qkv_sizes()[0]
        q = F.linear(x, w[:n], None if b is None else b[:n])
        k, v = F.linear(source, w[n:], None if b is None else b[n:]).chunk(2, dim=-1)
        return q, k, v

    def fuse(self, on=True):
        """One switch between the readable q/k/v projections and one fused matmul (blocks/fused.py).
        Self-attention only: a cross-attention's k, v read another stream."""
        if on and self.qkv_proj is None and self.q_proj.in_features == self.k_proj.in_features:
            self.qkv_proj = stack_linears([self.q_proj, self.k_proj, self.v_proj])
            del self.q_proj, self.k_proj, self.v_proj
        elif not on and self.qkv_proj is not None:
            self.q_proj, self.k_proj, self.v_proj = split_linear(self.qkv_proj, self.qkv_sizes())
            self.qkv_proj = None

    def rotated_fused_heads(self, x, rope):
        """The fused self-attention path: one matmul gives every head's q | k | v side by side, and
        q and k, adjacent there, are rotated in one pass (the same numbers as rotating each)."""
        heads = split_heads(self.qkv_proj(x), self.head_dim)  # (B, H + 2 H_kv, L, Dh)
        qk = rotate(heads[:, :self.num_heads + self.num_kv_heads], *rope)
        return qk[:, :self.num_heads], qk[:, self.num_heads:], heads[:, self.num_heads + self.num_kv_heads:]

    def forward(self, x, context=None, mask=None, rope=None, cache=None, return_probs=False, causal=False):
        """x (B, Lq, D); context (B, Lk, D_kv) or None for self-attention; mask bool (B|1, 1|H, Lq, Lk);
        rope = (cos, sin) each (B, Lq, Dh); cache = a LayerCache that keeps k, v across calls;
        causal=True: also hide later keys (Lq == Lk), without a mask tensor on the sdpa path."""
        if self.qkv_proj is not None and context is None and rope is not None:
            q, k, v = self.rotated_fused_heads(x, rope)
        else:
            q, k, v = (split_heads(t, self.head_dim) for t in self.project(x, x if context is None else context))
            # q (B, H, Lq, Dh); k, v (B, H_kv, Lk, Dh)
            if rope is not None:
                q, k = apply_rotary(q, k, *rope)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H_kv, T, Dh): all positions so far
        dropout_p = self.dropout if self.training else 0.0
        if return_probs:  # for pictures: the by-hand path exposes the attention map
            if causal:
                mask = combine(causal_mask(q.shape[2], k.shape[2], device=q.device), mask)
            probs = attention_probs(q, repeat_kv_heads(k, self.num_heads), mask, self.scale)
            out = torch.matmul(probs.to(v.dtype), repeat_kv_heads(v, self.num_heads))
        else:
            kernel = KERNELS[self.impl or _IMPL["name"]]
            out = kernel(q, k, v, mask=mask, scale=self.scale, dropout_p=dropout_p, causal=causal)
        out = self.o_proj(merge_heads(out))  # (B, Lq, D)
        return (out, probs) if return_probs else out

    def extra_repr(self):
        return (f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
                f"impl={self.impl or 'global'}")
