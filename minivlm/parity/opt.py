"""OPT parity cases: tiny OPTForCausalLM references over the decoder's switches, left-padded batches.

Corners: project_in / project_out (word_embed_proj_dim != hidden_size, as opt-350m), post-LN
(do_layer_norm_before=False, opt-350m again), no bias, no LayerNorm affine, untied head, gelu,
a generation that reads the last row of the position table.
"""
from .harness import ParityCase
from .llama import real_positions, text_inputs, text_inputs_with_labels

BASE = dict(vocab_size=71, hidden_size=48, ffn_dim=80, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=40, dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2,
            init_std=0.1)  # larger than HF's 0.02: peaked attention, so position bugs show

CONFIGS = {
    "pre-ln-tied": dict(),
    "project-in-out-16": dict(word_embed_proj_dim=16, num_hidden_layers=3),
    "post-ln-project-24": dict(do_layer_norm_before=False, word_embed_proj_dim=24),
    "no-bias-no-affine-untied-gelu": dict(enable_bias=False, layer_norm_elementwise_affine=False,
                                          tie_word_embeddings=False, activation_function="gelu",
                                          num_attention_heads=6),
    # 13-token prompts + 10 new tokens: generate feeds positions up to 21 of a 22-row table (its last row).
    "positions-to-table-end": dict(max_position_embeddings=22, num_attention_heads=2),
}


def _opt(**overrides):
    def build():
        import transformers
        return transformers.OPTForCausalLM(transformers.OPTConfig(**{**BASE, **overrides}))
    return build


CASES = []
for _name, _overrides in CONFIGS.items():
    CASES += [
        ParityCase("opt", f"{_name}/loss", _opt(**_overrides), text_inputs_with_labels, ("logits", "loss"),
                   valid_positions=real_positions),
        ParityCase("opt", f"{_name}/generate", _opt(**_overrides), text_inputs, ("logits",),
                   generate=dict(max_new_tokens=10), valid_positions=real_positions),
    ]
