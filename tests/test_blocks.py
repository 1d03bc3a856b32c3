"""Shared blocks against torch built-ins, the HF modules they mirror, or a hand computation."""
import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from minivlm.blocks import (MLP, Attention, KVCache, RMSNorm, SwiGLU, apply_rotary, causal_mask, combine,
                            default_inv_freq, get_activation, padding_mask, rope_cos_sin, set_attention_impl)
from minivlm.blocks.attention import attention_manual, attention_sdpa


def rand_mask(B, Lq, Lk):
    m = torch.rand(B, 1, Lq, Lk) > 0.3
    m[..., 0] = True  # every query sees at least one key
    return m


@pytest.mark.parametrize("mask_kind", ["none", "random", "causal", "padding+causal", "fully-masked-row"])
def test_manual_and_sdpa_kernels_agree(mask_kind):
    B, H, Lq, Lk, Dh = 2, 3, 5, 5, 8
    q, k, v = (torch.randn(B, H, L, Dh) for L in (Lq, Lk, Lk))
    mask = {"none": None, "random": rand_mask(B, Lq, Lk), "causal": causal_mask(Lq, Lk),
            "padding+causal": combine(causal_mask(Lq, Lk), padding_mask(torch.tensor([[0, 0, 1, 1, 1],
                                                                                     [1, 1, 1, 1, 1]]))),
            "fully-masked-row": torch.zeros(B, 1, Lq, Lk, dtype=torch.bool)}[mask_kind]
    a = attention_manual(q, k, v, mask, scale=0.3)
    b = attention_sdpa(q, k, v, mask, scale=0.3)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(a).all()


def test_manual_attention_is_the_textbook_formula():
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    expected = torch.zeros(3, 4)
    for i in range(3):  # one query at a time, causal, written out
        scores = torch.stack([q[0, 0, i] @ k[0, 0, j] / 2.0 for j in range(i + 1)])
        w = scores.exp() / scores.exp().sum()
        expected[i] = sum(w[j] * v[0, 0, j] for j in range(i + 1))
    torch.testing.assert_close(attention_manual(q, k, v, causal_mask(3, 3))[0, 0], expected)


def test_attention_module_matches_torch_multihead_attention():
    D, H = 24, 4
    ours = Attention(D, H).eval()
    ref = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    with torch.no_grad():
        wq, wk, wv = ref.in_proj_weight.chunk(3)
        bq, bk, bv = ref.in_proj_bias.chunk(3)
        for proj, w, b in [(ours.q_proj, wq, bq), (ours.k_proj, wk, bk), (ours.v_proj, wv, bv),
                           (ours.o_proj, ref.out_proj.weight, ref.out_proj.bias)]:
            proj.weight.copy_(w), proj.bias.copy_(b)
    x, ctx = torch.randn(2, 5, D), torch.randn(2, 7, D)
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[1, 5:] = False
    for impl in ("manual", "sdpa"):
        ours.impl = impl
        # cross-attention with key padding; torch's mask says True = *ignore*
        expected, _ = ref(x, ctx, ctx, key_padding_mask=~keep)
        torch.testing.assert_close(ours(x, context=ctx, mask=keep[:, None, None, :]), expected, atol=1e-6, rtol=1e-5)
        expected, _ = ref(x, x, x, attn_mask=~causal_mask(5, 5)[0, 0])
        torch.testing.assert_close(ours(x, mask=causal_mask(5, 5)), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (6, 2), (4, 1)])
def test_grouped_query_attention_equals_repeated_kv_heads(heads, kv_heads):
    """GQA = ordinary MHA whose K/V projections repeat each KV head for its group of query heads."""
    D, Dh = 32, 8
    gqa = Attention(D, heads, num_kv_heads=kv_heads, head_dim=Dh, qkv_bias=False)
    mha = Attention(D, heads, head_dim=Dh, qkv_bias=False)
    groups = heads // kv_heads
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        mha.o_proj.bias.copy_(gqa.o_proj.bias)
        for name in ("k_proj", "v_proj"):
            w = rearrange(getattr(gqa, name).weight, "(h d) i -> h d i", d=Dh)
            getattr(mha, name).weight.copy_(rearrange(w.repeat_interleave(groups, 0), "h d i -> (h d) i"))
    x = torch.randn(2, 6, D)
    torch.testing.assert_close(gqa(x, mask=causal_mask(6, 6)), mha(x, mask=causal_mask(6, 6)))


def test_bad_head_counts_are_refused():
    with pytest.raises(ValueError, match="multiple"):
        Attention(32, 6, num_kv_heads=4)


def test_kv_cache_decoding_equals_full_attention():
    torch.manual_seed(1)
    D, L = 16, 7
    attn = Attention(D, 4, num_kv_heads=2).eval()
    x = torch.randn(2, L, D)
    pos = torch.arange(L)[None].expand(2, L)
    cos, sin = rope_cos_sin(pos, default_inv_freq(4))
    full = attn(x, mask=causal_mask(L, L), rope=(cos, sin))
    cache = KVCache(1)
    steps = [attn(x[:, :3], mask=causal_mask(3, 3), rope=(cos[:, :3], sin[:, :3]), cache=cache[0])]
    for t in range(3, L):  # one new position at a time, attending over the cache
        steps.append(attn(x[:, t:t + 1], mask=causal_mask(1, t + 1), rope=(cos[:, t:t + 1], sin[:, t:t + 1]),
                          cache=cache[0]))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    assert len(cache) == L


def test_set_attention_impl_switches_every_module_and_rejects_unknown():
    attn = Attention(16, 2)
    x = torch.randn(1, 4, 16)
    set_attention_impl("manual")
    try:
        a = attn(x)
    finally:
        set_attention_impl("sdpa")
    torch.testing.assert_close(a, attn(x), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError):
        set_attention_impl("flash")


def test_return_probs_rows_sum_to_one_and_respect_the_mask():
    attn = Attention(16, 2)
    x = torch.randn(1, 4, 16)
    out, probs = attn.forward_with_probs(x, mask=causal_mask(4, 4))
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 2, 4))
    assert (probs[0, :, 0, 1:] == 0).all()
    torch.testing.assert_close(out, attn(x, mask=causal_mask(4, 4)), atol=1e-6, rtol=1e-5)


def test_masks_by_hand():
    assert causal_mask(2, 4)[0, 0].tolist() == [[True, True, True, False], [True, True, True, True]]
    assert padding_mask(torch.tensor([[0, 1, 1]]))[0, 0, 0].tolist() == [False, True, True]
    with pytest.raises(ValueError, match="batch, seq_len"):
        padding_mask(torch.ones(3))
    assert combine(None, None) is None


def test_rotary_rotates_pairs_and_keeps_relative_positions():
    Dh = 8
    inv = default_inv_freq(Dh, theta=100.0)
    torch.testing.assert_close(inv, torch.tensor([100.0 ** (-2 * i / Dh) for i in range(Dh // 2)]))
    q, k = torch.randn(1, 1, 1, Dh), torch.randn(1, 1, 1, Dh)

    def score(m, n):  # q at position m, k at position n
        cq, sq = rope_cos_sin(torch.tensor([[m]]), inv)
        ck, sk = rope_cos_sin(torch.tensor([[n]]), inv)
        return (apply_rotary(q, q, cq, sq)[0] * apply_rotary(k, k, ck, sk)[1]).sum()

    torch.testing.assert_close(score(5, 2), score(13, 10))  # only m - n matters
    # by hand: channel pair (0, Dh/2) rotated by angle pos * inv[0] = pos
    cos, sin = rope_cos_sin(torch.tensor([[3]]), inv)
    rq, _ = apply_rotary(q, q, cos, sin)
    a, b = q[0, 0, 0, 0], q[0, 0, 0, Dh // 2]
    torch.testing.assert_close(rq[0, 0, 0, 0], a * math.cos(3) - b * math.sin(3))
    torch.testing.assert_close(rq[0, 0, 0, Dh // 2], b * math.cos(3) + a * math.sin(3))


@pytest.mark.parametrize("name", ["gelu", "gelu_new", "gelu_pytorch_tanh", "quick_gelu", "silu", "relu",
                                  "gelu_fast"])
def test_activations_match_transformers(name):
    from transformers.activations import ACT2FN
    x = torch.linspace(-6, 6, 101)
    torch.testing.assert_close(get_activation(name)(x), ACT2FN[name](x))


def test_quick_gelu_is_the_formula_bit_for_bit():
    # with and without autograd: the formula, its input left alone, its gradient autograd's
    from minivlm.blocks.activations import quick_gelu
    x = torch.randn(4, 7, 33) * 4
    kept = x.clone()
    expected = x * torch.sigmoid(1.702 * x)
    with torch.no_grad():
        assert torch.equal(quick_gelu(x), expected)
    with torch.inference_mode():
        assert torch.equal(quick_gelu(x), expected)
    assert torch.equal(x, kept)
    xg = x.clone().requires_grad_()
    out = quick_gelu(xg)
    assert torch.equal(out.detach(), expected)
    out.sum().backward()
    xr = x.clone().requires_grad_()
    (xr * torch.sigmoid(1.702 * xr)).sum().backward()
    assert torch.equal(xg.grad, xr.grad)


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation"):
        get_activation("swoosh")


def test_mlp_is_fc_act_fc():
    mlp = MLP(8, 20, act="quick_gelu")
    x = torch.randn(3, 8)
    h = x @ mlp.fc1.weight.T + mlp.fc1.bias
    expected = (h * torch.sigmoid(1.702 * h)) @ mlp.fc2.weight.T + mlp.fc2.bias
    torch.testing.assert_close(mlp(x), expected)


def test_swiglu_matches_hf_llama_mlp():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP
    ref = LlamaMLP(LlamaConfig(hidden_size=16, intermediate_size=40, hidden_act="silu", num_attention_heads=4))
    ours = SwiGLU(16, 40)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_matches_hf_llama_rmsnorm(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    ref, ours = LlamaRMSNorm(16, eps=1e-5), RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
    ours.load_state_dict(ref.state_dict())
    x = (torch.randn(2, 5, 16) * 3).to(dtype)
    torch.testing.assert_close(ours.to(dtype)(x), ref.to(dtype)(x), atol=0, rtol=0)


def test_layernorm_is_torch_layernorm_by_hand():
    ln = torch.nn.LayerNorm(6, eps=1e-5)
    x = torch.randn(4, 6)
    expected = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(ln(x), expected)
    torch.testing.assert_close(F.layer_norm(x, (6,)), expected, atol=1e-4, rtol=1e-4)


def test_kernels_agree_when_kv_heads_are_shared():
    """sdpa shares KV heads natively (enable_gqa); the by-hand path repeats them: same result."""
    q, k, v = torch.randn(2, 6, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    mask = causal_mask(5, 7)
    torch.testing.assert_close(attention_manual(q, k, v, mask), attention_sdpa(q, k, v, mask), atol=1e-6, rtol=1e-5)
