"""LLaMA parity cases: tiny LlamaForCausalLM / LlamaModel references over the decoder's corners.

Every config is checked twice: with labels (logits at every real position, and the loss) and
without (logits, then greedy generate ids on the same left-padded batch — HF's generate would
forward the labels into every decode step, so those cases carry none).
"""
import torch

from .harness import ParityCase

BASE = dict(vocab_size=67, hidden_size=48, intermediate_size=72, num_hidden_layers=2,
            num_attention_heads=4, rms_norm_eps=1e-5,
            initializer_range=0.1)  # larger than HF's 0.02: peaked attention, so position bugs show
LLAMA3 = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8}

# name -> overrides of BASE; the head ratio num_attention_heads : num_key_value_heads is the GQA group.
CONFIGS = {
    "mha-1to1-tied-default-rope": dict(num_key_value_heads=4, tie_word_embeddings=True),
    "gqa-2to1-untied-llama3-rope": dict(num_key_value_heads=2, rope_parameters=LLAMA3),
    "gqa-3to1-bias-head_dim-10": dict(num_attention_heads=6, num_key_value_heads=2, head_dim=10,
                                      attention_bias=True, mlp_bias=True, num_hidden_layers=3,
                                      rope_parameters={"rope_type": "default", "rope_theta": 100.0}),
    "mqa-4to1-tied-linear-rope": dict(num_key_value_heads=1, tie_word_embeddings=True, hidden_act="gelu",
                                      rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.5}),
    # max_position_embeddings below the sequence length: the NTK base grows during the batch and generate.
    "gqa-2to1-dynamic-rope-past-max": dict(num_key_value_heads=2, max_position_embeddings=9,
                                           rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0,
                                                            "factor": 2.0}),
}

PAD = 0  # the id written at padded positions (never attended to)


def left_padded_batch(vocab_size, generator, lengths=(13, 9, 6)):
    """(B, L) ids and mask for prompts of different lengths, padded on the left as for generate."""
    batch, longest = len(lengths), max(lengths)
    input_ids = torch.randint(3, vocab_size, (batch, longest), generator=generator)
    attention_mask = torch.zeros(batch, longest, dtype=torch.long)
    for row, n in enumerate(lengths):
        attention_mask[row, longest - n:] = 1
    return input_ids.masked_fill(attention_mask == 0, PAD), attention_mask


def text_inputs(reference, generator):
    input_ids, attention_mask = left_padded_batch(reference.config.vocab_size, generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def text_inputs_with_labels(reference, generator):
    inputs = text_inputs(reference, generator)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    labels[0, :4] = -100  # a masked prompt part, as instruction tuning has
    return {**inputs, "labels": labels}


def real_positions(inputs):
    return inputs["attention_mask"].bool()


def _llama(cls, **overrides):
    def build():
        import transformers
        return getattr(transformers, cls)(transformers.LlamaConfig(**{**BASE, **overrides}))
    return build


CASES = []
for _name, _overrides in CONFIGS.items():
    CASES += [
        ParityCase("llama", f"{_name}/loss", _llama("LlamaForCausalLM", **_overrides), text_inputs_with_labels,
                   ("logits", "loss"), valid_positions=real_positions),
        ParityCase("llama", f"{_name}/generate", _llama("LlamaForCausalLM", **_overrides), text_inputs,
                   ("logits",), generate=dict(max_new_tokens=10), valid_positions=real_positions),
    ]
CASES.append(ParityCase("llama", "llama-model-gqa-2to1", _llama("LlamaModel", num_key_value_heads=2), text_inputs,
                        ("last_hidden_state",), valid_positions=real_positions))
