"""Attention masks as boolean "may attend" tensors, broadcastable to (B, heads, L_query, L_key).

True means the query may look at the key. Masks combine with `&`. Attention turns them into the
kernel's form, so every model builds masks the same readable way.
"""
import torch


def padding_mask(attention_mask):
    """(B, L_key) of 1 = real token, 0 = padding  ->  (B, 1, 1, L_key) bool."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq_len), got shape {tuple(attention_mask.shape)}")
    return attention_mask.bool()[:, None, None, :]


def causal_mask(q_len, k_len, device=None):
    """(1, 1, L_q, L_k) lower-triangular mask, aligned at the bottom right.

    With a KV cache the queries are the *last* q_len positions of k_len keys, so query i sits at
    absolute position k_len - q_len + i and may see keys 0..that position.
    """
    q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    k_pos = torch.arange(k_len, device=device)[None, :]
    return (k_pos <= q_pos)[None, None]


def combine(*masks):
    """AND of the masks that are not None; None when all are None (attend everywhere)."""
    out = None
    for m in masks:
        if m is not None:
            out = m if out is None else out & m
    return out
