"""LlamaForCausalLM / LlamaModel against transformers over GQA ratios, tying, RoPE types, biases,
head_dim != hidden/heads and left padding; plus the decoder's cache, inputs_embeds and bad input."""
import json
import tempfile

import pytest
import torch

import weights_convert
from minivlm.blocks import set_attention_impl
from minivlm.parity import FP32_TOLERANCE, run_case
from minivlm.parity.harness import assert_low_precision, build_seeded, convert_reference
from minivlm.parity.llama import BASE, CASES, left_padded_batch
from weights_convert.errors import MissingWeightsError


@pytest.fixture
def manual_attention():
    set_attention_impl("manual")
    yield
    set_attention_impl("sdpa")


@pytest.mark.parametrize("case", [c for c in CASES if "3to1" in c.name or "llama3" in c.name], ids=lambda c: c.name)
def test_llama_parity_manual_attention_kernel(case, manual_attention):
    """The by-hand attention path (scores, mask, softmax) gives HF's numbers too."""
    result = run_case(case)
    assert max(result["diffs"].values()) <= FP32_TOLERANCE, result
    assert result["generate_equal"] in (None, True)


def _reference(name="gqa-2to1-untied-llama3-rope/loss"):
    case = next(c for c in CASES if c.name == name)
    return build_seeded(case.build_reference)


@pytest.fixture(scope="module")
def pair():
    reference = _reference()
    ours = convert_reference(reference)
    return ours, reference


@pytest.mark.parametrize("case", [c for c in CASES if c.name.endswith("/loss")], ids=lambda c: c.name)
def test_llama_bf16_long_batch(case, bf16_device):
    """bf16 over 8 x 48 left-padded rows (RoPE frequencies stay fp32 in both, as from_pretrained(dtype=)
    leaves them): logits within 5e-2 of their scale, >= 99% top-1 agreement at real positions."""
    reference = build_seeded(case.build_reference)
    ids, mask = left_padded_batch(reference.config.vocab_size, torch.Generator().manual_seed(1),
                                  lengths=(48, 40, 33, 48, 25, 48, 47, 30))
    assert_low_precision(reference, {"input_ids": ids, "attention_mask": mask}, ("logits",), bf16_device,
                         valid_positions=lambda inputs: inputs["attention_mask"].bool(), name=case.name)


@torch.no_grad()
def test_cache_chunks_equal_one_pass(pair):
    """Feeding a left-padded batch in chunks through the KV cache gives the logits of one full pass."""
    ours, _ = pair
    ids, mask = left_padded_batch(ours.config.vocab_size, torch.Generator().manual_seed(3), lengths=(12, 7, 10))
    full = ours(input_ids=ids, attention_mask=mask).logits
    out, pieces = None, []
    for start, stop in [(0, 5), (5, 9), (9, 10), (10, 12)]:
        out = ours(input_ids=ids[:, start:stop], attention_mask=mask[:, :stop],
                   past_key_values=out.past_key_values if out else None, use_cache=True)
        pieces.append(out.logits)
    assert len(out.past_key_values) == 12
    real = mask.bool()
    assert (torch.cat(pieces, 1) - full)[real].abs().max() <= 1e-5


@torch.no_grad()
def test_inputs_embeds_equal_input_ids(pair):
    ours, reference = pair
    ids, mask = left_padded_batch(ours.config.vocab_size, torch.Generator().manual_seed(4))
    embeds = reference.get_input_embeddings()(ids)
    a = ours(inputs_embeds=embeds, attention_mask=mask).logits
    b = reference(inputs_embeds=embeds, attention_mask=mask).logits
    c = ours(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert (a - b)[real].abs().max() <= FP32_TOLERANCE
    assert torch.equal(a, c)


def test_bad_input_errors(pair):
    ours, _ = pair
    ids = torch.randint(3, 60, (2, 5))
    embeds = torch.randn(2, 5, BASE["hidden_size"])
    with pytest.raises(ValueError, match="exactly one of input_ids .* got both"):
        ours(input_ids=ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match="got neither"):
        ours(attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"attention_mask must be .* = \(2, 5\), got shape \(2, 6\)"):
        ours(input_ids=ids, attention_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(batch, seq_len, 48\)"):
        ours(inputs_embeds=torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"labels must be \(batch, seq_len\) = \(2, 5\)"):
        ours(input_ids=ids, labels=ids[:, :4])
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        ours.generate(input_ids=ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match=r"attention_mask must be \(2, 5\) like the prompt"):
        ours.generate(input_ids=ids, attention_mask=torch.ones(2, 4))


def test_tied_checkpoint_needs_tied_config():
    """A tied save leaves lm_head.weight out; claiming untied in config.json must fail, naming the key."""
    reference = _reference("mha-1to1-tied-default-rope/loss")
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        path = f"{folder}/config.json"
        config = json.load(open(path))
        config["tie_word_embeddings"] = False
        json.dump(config, open(path, "w"))
        with pytest.raises(MissingWeightsError, match="lm_head.weight"):
            weights_convert.load_pretrained(folder)


@torch.no_grad()
def test_legacy_rope_scaling_config():
    """Hub config.json files of the transformers 4 era: rope_theta at the top, rope_scaling with "type"."""
    import transformers
    reference = _reference("mqa-4to1-tied-linear-rope/loss")
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        path = f"{folder}/config.json"
        config = json.load(open(path))
        rope = config.pop("rope_parameters")
        config["rope_theta"] = rope.pop("rope_theta")
        config["rope_scaling"] = {"type": rope["rope_type"], "factor": rope["factor"]}
        json.dump(config, open(path, "w"))
        ours = weights_convert.load_pretrained(folder, dtype=torch.float32)
        legacy = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
    assert ours.config.rope_parameters == {"rope_type": "linear", "factor": 2.5, "rope_theta": 10000.0}
    ids, mask = left_padded_batch(ours.config.vocab_size, torch.Generator().manual_seed(5))
    real = mask.bool()
    diff = (ours(input_ids=ids, attention_mask=mask).logits - legacy(input_ids=ids, attention_mask=mask).logits)
    assert diff[real].abs().max() <= FP32_TOLERANCE
