"""Attention masks as boolean "may attend" tensors, broadcastable to (B, heads, L_query, L_key).

True means the query may look at the key. Masks combine with `&`. Attention turns them into the
kernel's form, so every model builds masks the same readable way.
"""
import torch
from torch import Tensor


def padding_mask(attention_mask: Tensor) -> Tensor:
    """(B, L_key) of 1 = real token, 0 = padding  ->  (B, 1, 1, L_key) bool."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq_len), got shape {tuple(attention_mask.shape)}")
    return attention_mask.bool()[:, None, None, :]


def causal_mask(q_len: int, k_len: int, device: torch.device | None = None, window: int | None = None,
                past: int | None = None) -> Tensor:
    """(1, 1, L_q, L_k) lower-triangular mask: query i sits at position q = past + i and may see keys 0..q.

    past defaults to k_len - q_len (aligned at the bottom right): with a growing KV cache the queries
    are the *last* q_len positions of k_len keys. A static cache's buffer is longer than the positions
    written so far: past is then the number cached, and the keys beyond the queries stay hidden.

    window (Mistral's sliding window, Jiang et al. 2023): query q sees only keys k with
    q - window < k <= q, i.e. itself and the window - 1 keys before it. This is transformers'
    rule (masking_utils.sliding_window_overlay: kv_idx > q_idx - sliding_window, and'ed with
    kv_idx <= q_idx), with positions counted in the cache — padding included — not in position_ids.
    Every key stays in the cache; the mask alone hides the old ones.
    """
    past = k_len - q_len if past is None else past
    q_pos = torch.arange(past, past + q_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        if window < 1:
            raise ValueError(f"a sliding window must be >= 1 position, got {window}")
        allowed &= k_pos > q_pos - window
    return allowed[None, None]


def combine(*masks: Tensor | None) -> Tensor | None:
    """AND of the masks that are not None; None when all are None (attend everywhere)."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out
