"""Rotary position embeddings (RoPE, Su et al. 2021) — the rotation applied to queries and keys.

Each pair of channels (i, i + Dh/2) of a head is rotated by the angle position * inv_freq[i].
The dot product of a rotated query and key then depends only on their relative position.
We use the "rotate half" pairing that HF LLaMA checkpoints are stored for (not interleaved pairs).

How the frequencies are made is a small function per `rope_type` (HF's names, read from
`config.rope_parameters`): "default", "linear" (position interpolation), "dynamic" (NTK-aware base
growth past the trained length) and "llama3" (Llama 3.1's band-wise slow-down of low frequencies).
`rope_inv_freq` picks one. None of these types rescales cos/sin (HF's attention_scaling is 1.0 for
all of them), so there is no such factor here; yarn / longrope are not supported.

Two more layouts of the same rotation (Qwen2-VL, Wang et al. 2024):
* `vision_rope_2d`: a ViT patch at (row, col) rotates the first half of each head's channel pairs
  by its row and the second half by its column (axial 2-D RoPE, one frequency table for both);
* M-RoPE (`mrope_section` in rope_parameters): a decoder token has three positions (time, height,
  width); the Dh/2 frequencies are cut into three sections, section k turning with position k.
  Text tokens carry three equal positions, so M-RoPE on text is plain 1-D RoPE.
"""
import math

import torch
from torch import Tensor


def default_inv_freq(head_dim: int, theta: float = 10000.0) -> Tensor:
    """inv_freq[i] = theta^(-2i/Dh) for i < Dh/2."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def linear_inv_freq(head_dim: int, theta: float, factor: float) -> Tensor:
    """Position interpolation (Chen et al. 2023): positions / factor, i.e. every frequency / factor."""
    return default_inv_freq(head_dim, theta) / factor


def dynamic_inv_freq(head_dim: int, theta: float, factor: float, max_position_embeddings: int,
                     seq_len: int) -> Tensor:
    """Dynamic NTK scaling: past the trained length the base grows with the sequence length.

    HF recomputes this when max(position_ids) + 1 exceeds max_position_embeddings and returns to the
    default frequencies below it. (HF keeps the largest length seen as state on the module; we compute
    it from the positions of each call, which is the same within one generate.)
    """
    if seq_len <= max_position_embeddings:
        return default_inv_freq(head_dim, theta)
    base = theta * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (head_dim / (head_dim - 2))
    return default_inv_freq(head_dim, base)


def llama3_inv_freq(head_dim: int, theta: float, factor: float, low_freq_factor: float, high_freq_factor: float,
                    original_max_position_embeddings: int) -> Tensor:
    """Llama 3.1: wavelengths longer than original_len / low_freq_factor are slowed down by `factor`,
    those shorter than original_len / high_freq_factor are kept, the band between is interpolated."""
    inv_freq = default_inv_freq(head_dim, theta)
    wavelen = 2 * math.pi / inv_freq
    low_wavelen = original_max_position_embeddings / low_freq_factor    # longer than this: / factor
    high_wavelen = original_max_position_embeddings / high_freq_factor  # shorter than this: untouched
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    middle = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(middle, blended, out)


ROPE_TYPES = ("default", "linear", "dynamic", "llama3")


def rope_inv_freq(rope_parameters: dict, head_dim: int, max_position_embeddings: int,
                  seq_len: int | None = None) -> Tensor:
    """inv_freq (Dh/2,) for HF's rope_parameters dict; seq_len = max(position_ids) + 1 (only "dynamic" uses it)."""
    p = rope_parameters
    kind = p.get("rope_type", p.get("type", "default"))
    theta = p.get("rope_theta", 10000.0)
    if p.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"partial_rotary_factor={p['partial_rotary_factor']} is not supported (expected 1.0)")
    if kind == "default":
        return default_inv_freq(head_dim, theta)
    if kind == "linear":
        return linear_inv_freq(head_dim, theta, p["factor"])
    if kind == "dynamic":
        return dynamic_inv_freq(head_dim, theta, p["factor"], max_position_embeddings,
                                max_position_embeddings if seq_len is None else seq_len)
    if kind == "llama3":
        return llama3_inv_freq(head_dim, theta, p["factor"], p["low_freq_factor"], p["high_freq_factor"],
                               p.get("original_max_position_embeddings", max_position_embeddings))
    raise ValueError(f"rope_type {kind!r} is not supported; expected one of {ROPE_TYPES}")


def rope_cos_sin(position_ids: Tensor, inv_freq: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """(B, L) positions -> cos, sin of shape (B, L, Dh), computed in float32 like the reference."""
    angles = position_ids[..., None].float() * inv_freq.to(position_ids.device)  # (B, L, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, L, Dh): the same angle for both halves
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:  # (..., Dh): (x1, x2) -> (-x2, x1)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, L, Dh); cos/sin (B, L, Dh) -> every head of x rotated by its position's angles, in x's dtype.

    cos / sin in x's dtype (the decoders, as HF's apply_rotary_pos_emb) rotate in that dtype; float32
    ones (the vision towers) rotate in float32 and round once at the end, as HF's
    apply_rotary_pos_emb_vision upcasts q and k."""
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


def apply_rotary(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """q (B, H, L, Dh), k (B, H_kv, L, Dh); cos/sin (B, L, Dh) -> rotated q, k."""
    return rotate(q, cos, sin), rotate(k, cos, sin)


def vision_rope_2d(rows: Tensor, cols: Tensor, head_dim: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Axial 2-D RoPE for ViT patches (Qwen2-VL's vision tower): rows, cols (N,) -> cos, sin (N, Dh).

    The frequencies are those of a head of Dh/2 channels; the Dh/2 angles are [row * f, col * f],
    repeated for the two rotate-half halves like the 1-D case."""
    inv_freq = default_inv_freq(head_dim // 2, theta).to(rows.device)  # (Dh/4,)
    angles = torch.cat([rows[:, None].float() * inv_freq, cols[:, None].float() * inv_freq], dim=-1)  # (N, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)  # (N, Dh)
    return angles.cos(), angles.sin()


def mrope_cos_sin(position_ids: Tensor, inv_freq: Tensor, mrope_section: list[int],
                  dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """M-RoPE: (3, B, L) positions (time, height, width) -> cos, sin (B, L, Dh).

    Frequency i < Dh/2 belongs to section k (mrope_section = sizes, summing to Dh/2) and turns with
    position axis k % 3 — HF's Qwen2VLRotaryEmbedding.recomposition_frequencies."""
    if sum(mrope_section) != inv_freq.shape[0]:
        raise ValueError(f"mrope_section {list(mrope_section)} sums to {sum(mrope_section)}, "
                         f"the head has {inv_freq.shape[0]} frequencies (head_dim / 2)")
    angles = position_ids[..., None].float() * inv_freq.to(position_ids.device)  # (3, B, L, Dh/2)
    sections = angles.split(list(mrope_section), dim=-1)
    angles = torch.cat([part[k % 3] for k, part in enumerate(sections)], dim=-1)  # (B, L, Dh/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, L, Dh)
    return angles.cos().to(dtype), angles.sin().to(dtype)


class RotaryEmbedding:
    """cos/sin for a decoder's positions, from HF's rope_parameters.

    Not an nn.Module with an inv_freq buffer on purpose: `model.to(bfloat16)` would round the
    frequencies; we keep them in float32 (computed on the fly, Dh/2 numbers) like HF's forward does.
    """

    def __init__(self, head_dim: int, rope_parameters: dict, max_position_embeddings: int):
        self.head_dim = head_dim
        self.rope_parameters = dict(rope_parameters)
        self.max_position_embeddings = max_position_embeddings
        self.dynamic = self.rope_parameters.get("rope_type", self.rope_parameters.get("type")) == "dynamic"
        self.inv_freq = rope_inv_freq(self.rope_parameters, head_dim, max_position_embeddings)  # (Dh/2,)
        self.mrope_section = self.rope_parameters.get("mrope_section")  # Qwen2-VL's switch, else None
        self.table = None  # cos, sin (T, Dh) for positions 0..T-1, float32: made once, then looked up

    def lookup(self, position_ids: Tensor, reach: int | None = None) -> tuple[Tensor, Tensor]:
        """cos, sin (B, L, Dh) read from a table of positions 0..T-1, grown (doubling) on demand, so a
        decode step indexes two rows instead of recomputing angles and their cos / sin.
        reach: a bound the caller knows (max position + 1); None reads it from the positions, which
        makes the host wait on the device, once per prompt."""
        needed = int(position_ids.max()) + 1 if reach is None else reach
        if self.table is None or self.table[0].shape[0] < needed or self.table[0].device != position_ids.device:
            size = max(256, 2 * needed)
            cos, sin = rope_cos_sin(torch.arange(size, device=position_ids.device)[None], self.inv_freq)
            self.table = (cos[0], sin[0])  # (T, Dh) each
        cos, sin = self.table
        return cos[position_ids], sin[position_ids]

    def __call__(self, position_ids: Tensor, dtype: torch.dtype = torch.float32,
                 reach: int | None = None) -> tuple[Tensor, Tensor]:
        """(B, L) or M-RoPE's (3, B, L) positions -> cos, sin (B, L, Dh); reach: see lookup."""
        if self.mrope_section is not None:
            if position_ids.dim() == 2:  # text only: the three axes share one position
                position_ids = position_ids.expand(3, *position_ids.shape)
            return mrope_cos_sin(position_ids, self.inv_freq, self.mrope_section, dtype)
        if position_ids.dim() != 2:
            raise ValueError(f"position_ids of shape {tuple(position_ids.shape)} need M-RoPE (rope_parameters "
                             f"with mrope_section); this decoder takes (batch, seq_len)")
        if self.dynamic:  # the base depends on how far the positions reach: no fixed table
            seq_len = int(position_ids.max()) + 1
            inv_freq = rope_inv_freq(self.rope_parameters, self.head_dim, self.max_position_embeddings, seq_len)
            return rope_cos_sin(position_ids, inv_freq, dtype)
        cos, sin = self.lookup(position_ids, reach)
        return cos.to(dtype), sin.to(dtype)
