"""Mistral parity cases: LLaMA with a sliding window (the prompts are longer than the window, and
greedy generation runs past it, so the window bites in the prefill mask, in the KV cache and in
every decode step)."""
from .harness import ParityCase
from .llama import BASE, real_positions, text_inputs, text_inputs_with_labels

# name -> overrides of llama's BASE; prompts are 13 / 9 / 6 tokens + 10 generated.
CONFIGS = {
    "window-4-gqa-2to1": dict(sliding_window=4, num_key_value_heads=2),
    "window-2-tied": dict(sliding_window=2, num_key_value_heads=4, tie_word_embeddings=True),
    "window-16-crossed-while-generating-mqa": dict(sliding_window=16, num_key_value_heads=1, num_hidden_layers=3,
                                                   head_dim=10),
    "window-null-like-v0.2": dict(sliding_window=None, num_key_value_heads=2),
}


def decoder_cases(family, config_class, model_class, configs, base=BASE):
    """The llama cases' pattern for a sibling decoder: each config with labels (logits, loss) and
    without (logits, greedy ids), over the left-padded batch."""
    def build(overrides):
        def make():
            import transformers
            return getattr(transformers, model_class)(getattr(transformers, config_class)(**{**base, **overrides}))
        return make

    cases = []
    for name, overrides in configs.items():
        cases += [
            ParityCase(family, f"{name}/loss", build(overrides), text_inputs_with_labels, ("logits", "loss"),
                       valid_positions=real_positions),
            ParityCase(family, f"{name}/generate", build(overrides), text_inputs, ("logits",),
                       generate=dict(max_new_tokens=10), valid_positions=real_positions),
        ]
    return cases


CASES = decoder_cases("mistral", "MistralConfig", "MistralForCausalLM", CONFIGS)
