"""OPT beyond the parity cases (which run in test_parity.py): the hub's `decoder.*` spelling, the
KV cache in chunks, the position table's end, and bad input."""
import tempfile

import pytest
import torch
from safetensors.torch import load_file, save_file

import weights_convert
from minivlm.parity import FP32_TOLERANCE
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.parity.llama import left_padded_batch
from minivlm.parity.opt import CASES
from test_llama_parity import test_cache_chunks_equal_one_pass as llama_cache_check


def _reference(name="project-in-out-16/loss"):
    return build_seeded(next(c for c in CASES if c.name == name).build_reference)


@pytest.fixture(scope="module")
def pair():
    reference = _reference()
    ours = convert_reference(reference)
    return ours, reference


@torch.no_grad()
def test_hub_spelling_decoder_prefix():
    """facebook/opt-* files were saved from OPTModel: `decoder.*`, no `model.` (and lm_head stored)."""
    reference = _reference("post-ln-project-24/loss")
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        state = load_file(f"{folder}/model.safetensors")
        state = {k.removeprefix("model."): v for k, v in state.items()}
        state["lm_head.weight"] = state["decoder.embed_tokens.weight"].clone()
        save_file(state, f"{folder}/model.safetensors", metadata={"format": "pt"})
        ours = weights_convert.load_pretrained(folder)
    ids, mask = left_padded_batch(ours.config.vocab_size, torch.Generator().manual_seed(2))
    diff = ours(input_ids=ids, attention_mask=mask).logits - reference(input_ids=ids, attention_mask=mask).logits
    assert diff[mask.bool()].abs().max() <= FP32_TOLERANCE


def test_cache_chunks_equal_one_pass(pair):
    """LLaMA's check on OPT: fed in chunks through the KV cache, positions still come from the mask
    (cumsum) and the logits equal one pass."""
    llama_cache_check(pair)


@torch.no_grad()
def test_inputs_embeds_at_word_width(pair):
    """inputs_embeds come at word_embed_proj_dim (16) and go through project_in, as HF's."""
    ours, reference = pair
    ids, mask = left_padded_batch(ours.config.vocab_size, torch.Generator().manual_seed(4))
    embeds = reference.get_input_embeddings()(ids)  # (B, L, 16)
    a = ours(inputs_embeds=embeds, attention_mask=mask).logits
    b = reference(inputs_embeds=embeds, attention_mask=mask).logits
    assert (a - b)[mask.bool()].abs().max() <= FP32_TOLERANCE


def test_bad_input_errors(pair):
    ours, _ = pair
    ids = torch.randint(3, 60, (2, 5))
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(batch, seq_len, 16\)"):
        ours(inputs_embeds=torch.randn(2, 5, 48))
    with pytest.raises(ValueError, match=r"attention_mask must be .* = \(2, 5\), got shape \(2, 6\)"):
        ours(input_ids=ids, attention_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match="position 40 is past OPT's position table of 40"):
        ours(input_ids=torch.randint(3, 60, (1, 41)))
    with pytest.raises(ValueError, match="got both"):
        ours(input_ids=ids, inputs_embeds=torch.randn(2, 5, 16))


@pytest.mark.parametrize("widths", [
    dict(hidden_size=768, ffn_dim=3072, num_attention_heads=12),                       # facebook/opt-125m
    dict(hidden_size=1024, ffn_dim=4096, num_attention_heads=16, word_embed_proj_dim=512,
         do_layer_norm_before=False),                                                    # facebook/opt-350m
], ids=["opt-125m", "opt-350m"])
def test_real_widths(widths):
    """Real checkpoints' widths and vocabulary (50272), one layer: logits, loss, greedy ids."""
    import transformers
    from minivlm.parity.harness import ParityCase, assert_parity
    from minivlm.parity.llama import real_positions, text_inputs_with_labels
    config = dict(vocab_size=50272, num_hidden_layers=1, max_position_embeddings=2048, dropout=0.0, **widths)
    case = ParityCase("opt", "real-widths", lambda: transformers.OPTForCausalLM(transformers.OPTConfig(**config)),
                      text_inputs_with_labels, ("logits", "loss"), valid_positions=real_positions,
                      generate=dict(max_new_tokens=4),
                      generate_inputs=lambda inputs: {k: v for k, v in inputs.items() if k != "labels"})
    assert_parity(case)
