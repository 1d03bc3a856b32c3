"""Rotary position embeddings (RoPE, Su et al. 2021) — the rotation applied to queries and keys.

Each pair of channels (i, i + Dh/2) of a head is rotated by the angle position * inv_freq[i].
The dot product of a rotated query and key then depends only on their relative position.
We use the "rotate half" pairing that HF LLaMA checkpoints are stored for (not interleaved pairs).
How the frequencies are made (rope_theta, llama3 scaling ...) lives with the decoder config.
"""
import torch


def default_inv_freq(head_dim, theta=10000.0):
    """inv_freq[i] = theta^(-2i/Dh) for i < Dh/2."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def rope_cos_sin(position_ids, inv_freq, dtype=torch.float32):
    """(B, L) positions -> cos, sin of shape (B, L, Dh), computed in float32 like the reference."""
    angles = position_ids[..., None].float() * inv_freq.to(position_ids.device)  # (B, L, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, L, Dh): the same angle for both halves
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):  # (..., Dh): (x1, x2) -> (-x2, x1)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(q, k, cos, sin):
    """q (B, H, L, Dh), k (B, H_kv, L, Dh); cos/sin (B, L, Dh) -> rotated q, k."""
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
