"""RoPE: frequencies per rope_type equal to HF's init functions, and the rotation's defining properties."""
import math

import pytest
import torch

from minivlm.blocks.rotary import (RotaryEmbedding, apply_rotary, default_inv_freq, rope_cos_sin,
                                   rope_inv_freq)

LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def hf_inv_freq(rope_parameters, head_dim=32, max_position_embeddings=128, seq_len=None):
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    config = transformers.LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim,
                                      max_position_embeddings=max_position_embeddings,
                                      rope_parameters=dict(rope_parameters))
    kind = config.rope_parameters["rope_type"]
    if kind == "default":
        return transformers.models.llama.modeling_llama.LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[kind](config, "cpu", seq_len=seq_len)


@pytest.mark.parametrize("params", [
    {"rope_type": "default", "rope_theta": 10000.0},
    {"rope_type": "default", "rope_theta": 500000.0},
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    LLAMA3,
    {**LLAMA3, "factor": 32.0, "low_freq_factor": 2.0, "high_freq_factor": 8.0, "original_max_position_embeddings": 512},
], ids=lambda p: f"{p['rope_type']}-{p.get('factor', 1)}")
def test_inv_freq_equals_hf(params):
    inv_freq, scaling = hf_inv_freq(params)
    assert scaling == 1.0  # none of the supported types rescales cos/sin
    assert torch.allclose(rope_inv_freq(params, 32, 128), inv_freq, rtol=1e-6, atol=0)


@pytest.mark.parametrize("seq_len", [50, 128, 129, 400])
def test_dynamic_inv_freq_equals_hf(seq_len):
    params = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}
    ours = rope_inv_freq(params, 32, 128, seq_len=seq_len)
    theirs, _ = hf_inv_freq(params, seq_len=torch.tensor(seq_len))
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=0)
    assert torch.equal(ours, default_inv_freq(32)) == (seq_len <= 128)  # only past the trained length


def test_llama3_bands_by_hand():
    """Short wavelengths untouched, long ones divided by factor, the middle in between."""
    ours = rope_inv_freq(LLAMA3, 32, 128)
    base = default_inv_freq(32, 500000.0)
    wavelen = 2 * math.pi / base
    short, long = wavelen < 64 / 4, wavelen > 64 / 1
    assert short.any() and long.any() and (~short & ~long).any()
    assert torch.equal(ours[short], base[short])
    assert torch.allclose(ours[long], base[long] / 8)
    mid = ~short & ~long
    assert ((ours[mid] < base[mid]) & (ours[mid] > base[mid] / 8)).all()


def test_unsupported_rope_type_is_refused():
    with pytest.raises(ValueError, match="rope_type 'yarn' is not supported"):
        rope_inv_freq({"rope_type": "yarn", "factor": 2.0}, 32, 128)


def test_rotation_keeps_norms_and_depends_on_relative_position():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    inv_freq = default_inv_freq(16)

    def rotated(x, pos):
        cos, sin = rope_cos_sin(torch.tensor([[pos]]), inv_freq)
        return apply_rotary(x, x, cos, sin)[0]

    assert torch.allclose(rotated(q, 0), q)  # position 0: no rotation
    assert torch.allclose(rotated(q, 7).norm(), q.norm())  # a rotation keeps lengths
    dots = [(rotated(q, m) * rotated(k, n)).sum() for m, n in [(3, 1), (10, 8), (52, 50)]]
    assert torch.allclose(dots[0], dots[1], atol=1e-5) and torch.allclose(dots[0], dots[2], atol=1e-4)
    assert not torch.allclose(dots[0], (rotated(q, 3) * rotated(k, 0)).sum(), atol=1e-3)


def test_rotary_embedding_shapes_and_dtype():
    rope = RotaryEmbedding(10, {"rope_type": "default", "rope_theta": 100.0}, 32)
    cos, sin = rope(torch.arange(6).expand(2, 6), dtype=torch.bfloat16)
    assert cos.shape == sin.shape == (2, 6, 10) and cos.dtype == torch.bfloat16
    assert rope.inv_freq.dtype == torch.float32
