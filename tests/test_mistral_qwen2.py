"""Mistral and Qwen2 as switches on the LLaMA decoder: the sliding-window mask by hand, the window
through the KV cache, Qwen2's q/k/v-only bias and the configs that are refused. Parity of logits,
loss and greedy ids over several tiny configs is in test_parity.py (minivlm/parity/mistral.py, qwen2.py)."""
import json
import tempfile

import pytest
import torch

import weights_convert
from minivlm.blocks import causal_mask, set_attention_impl
from minivlm.parity import FP32_TOLERANCE, run_case
from minivlm.parity.harness import convert_reference
from minivlm.parity.llama import BASE, left_padded_batch, text_inputs
from minivlm.parity.mistral import CASES as MISTRAL
from minivlm.parity.qwen2 import CASES as QWEN2
from minivlm.text.llama_config import LlamaConfig
from weights_convert.families.llama import decoder_config, qwen2_config


def test_sliding_window_mask_by_hand():
    # 5 keys, the last 3 are queries (a cache of 2), window 2: query at position q sees q-1 and q.
    got = causal_mask(3, 5, window=2)[0, 0].int()
    assert got.tolist() == [[0, 1, 1, 0, 0],
                            [0, 0, 1, 1, 0],
                            [0, 0, 0, 1, 1]]
    # A window wider than the sequence is plain causal.
    assert torch.equal(causal_mask(4, 4, window=9), causal_mask(4, 4))
    with pytest.raises(ValueError, match="sliding window must be >= 1"):
        causal_mask(2, 2, window=0)


@pytest.mark.parametrize("case", [c for c in MISTRAL + QWEN2 if "window-4" in c.name or "sliding-3" in c.name],
                         ids=lambda c: c.name)
def test_sliding_parity_manual_attention_kernel(case):
    """The by-hand attention path gives HF's numbers with the window too."""
    set_attention_impl("manual")
    try:
        result = run_case(case)
    finally:
        set_attention_impl("sdpa")
    assert max(result["diffs"].values()) <= FP32_TOLERANCE, result
    assert result["generate_equal"] in (None, True)


def _reference(cls, **overrides):
    import transformers
    torch.manual_seed(0)
    config = getattr(transformers, cls.replace("ForCausalLM", "Config"))(**{**BASE, **overrides})
    return getattr(transformers, cls)(config).eval()


@torch.no_grad()
@pytest.mark.parametrize("cls, overrides", [
    ("MistralForCausalLM", dict(sliding_window=3, num_key_value_heads=2)),
    ("Qwen2ForCausalLM", dict(num_hidden_layers=3, num_key_value_heads=2, use_sliding_window=True, sliding_window=3,
                              max_window_layers=1)),
])
def test_window_through_cache_chunks(cls, overrides):
    """A left-padded batch fed in chunks through our KV cache (every key kept, the mask hides the old
    ones) gives HF's one-pass logits; chunks of 1 are decode steps long past the window."""
    reference = _reference(cls, **overrides)
    ours = convert_reference(reference)
    ids, mask = left_padded_batch(BASE["vocab_size"], torch.Generator().manual_seed(3), lengths=(14, 7, 10))
    full = reference(input_ids=ids, attention_mask=mask).logits
    out, pieces = None, []
    for start, stop in [(0, 5), (5, 9), (9, 10), (10, 11), (11, 14)]:
        out = ours(input_ids=ids[:, start:stop], attention_mask=mask[:, :stop],
                   past_key_values=out.past_key_values if out else None, use_cache=True)
        pieces.append(out.logits)
    assert len(out.past_key_values) == 14  # nothing evicted
    assert (torch.cat(pieces, 1) - full)[mask.bool()].abs().max() <= FP32_TOLERANCE


@torch.no_grad()
def test_window_1_equals_hf_without_cache():
    """sliding_window=1 (a query sees itself only): ours equals HF's uncached greedy generate. HF's
    cached generate differs from its own uncached one there (DynamicSlidingWindowLayer keeps
    `[-window + 1:]` = everything when window is 1), so we follow the mask's rule."""
    reference = _reference("MistralForCausalLM", sliding_window=1, num_key_value_heads=4)
    ours = convert_reference(reference)
    inputs = text_inputs(reference, torch.Generator().manual_seed(0))
    expected = reference.generate(**inputs, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(ours.generate(**inputs, max_new_tokens=8), expected)
    assert torch.equal(ours.generate(**inputs, max_new_tokens=8, use_cache=False), expected)


def test_qwen2_bias_on_qkv_only():
    reference = _reference("Qwen2ForCausalLM", num_key_value_heads=2, tie_word_embeddings=True)
    ours = convert_reference(reference)
    attn = ours.model.layers[0].attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
    assert attn.o_proj.bias is None and ours.model.layers[0].mlp.gate_proj.bias is None
    assert ours.lm_head.weight is ours.model.embed_tokens.weight


def test_qwen2_layer_types_follow_max_window_layers():
    hf = dict(model_type="qwen2", hidden_size=8, intermediate_size=8, num_hidden_layers=4, num_attention_heads=2,
              num_key_value_heads=2, use_sliding_window=True, sliding_window=5, max_window_layers=2)
    cfg = qwen2_config(hf)
    assert cfg.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    assert [cfg.layer_window(i) for i in range(4)] == [None, None, 5, 5]
    assert qwen2_config({**hf, "use_sliding_window": False}).layer_types == ["full_attention"] * 4


def test_refused_configs_name_the_problem():
    hf = dict(hidden_size=8, intermediate_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2)
    with pytest.raises(ValueError, match="'gemma' language model is not supported"):
        decoder_config({**hf, "model_type": "gemma"})
    with pytest.raises(ValueError, match="sliding_attention but sliding_window is None"):
        qwen2_config({**hf, "layer_types": ["full_attention", "sliding_attention"]})
    with pytest.raises(ValueError, match="layer_types names 3 layers"):
        LlamaConfig(**hf, layer_types=["full_attention"] * 3)
    with pytest.raises(ValueError, match="chunked_attention"):
        LlamaConfig(**hf, sliding_window=4, layer_types=["full_attention", "chunked_attention"])


def test_mistral_and_qwen2_load_by_architecture():
    for cls, kind in [("MistralForCausalLM", "mistral"), ("Qwen2ForCausalLM", "qwen2")]:
        with tempfile.TemporaryDirectory() as folder:
            _reference(cls, num_key_value_heads=2, sliding_window=4).save_pretrained(folder)
            assert json.load(open(f"{folder}/config.json"))["model_type"] == kind
            model = weights_convert.load_pretrained(folder)
            assert model.config.sliding_window == (4 if kind == "mistral" else None)  # qwen2: use_sliding_window off


def test_missing_fields_take_hf_class_defaults():
    """llava-v1.6-mistral-7b-hf's text_config stores no hidden_size / layer / head counts: HF's
    MistralConfig defaults fill them (8 KV heads, not one per head), as for Qwen2Config."""
    import transformers
    stored = {"model_type": "mistral", "intermediate_size": 14336, "num_key_value_heads": 8, "rope_theta": 1000000.0,
              "sliding_window": None, "vocab_size": 32064, "rms_norm_eps": 1e-05}
    ours, theirs = decoder_config(stored), transformers.MistralConfig(**stored)
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                 "max_position_embeddings", "sliding_window", "vocab_size"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.rope_parameters["rope_theta"] == 1000000.0
    ours, theirs = decoder_config({"model_type": "qwen2"}), transformers.Qwen2Config()
    for name in ("hidden_size", "intermediate_size", "num_key_value_heads", "vocab_size", "bos_token_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.sliding_window is None and ours.qkv_bias
