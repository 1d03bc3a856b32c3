"""Qwen2 parity cases: LLaMA with bias on q/k/v only, tied embeddings as the small models have, and
the optional per-layer sliding window (use_sliding_window, max_window_layers / layer_types)."""
from .mistral import decoder_cases

CONFIGS = {
    "tied-gqa-2to1": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "untied-gqa-3to1-theta-1e6": dict(num_attention_heads=6, num_key_value_heads=2, rope_parameters={
        "rope_type": "default", "rope_theta": 1000000.0}),
    # layer 0 full, layers 1-2 sliding over 3 positions: two masks in one forward.
    "sliding-3-from-layer-1": dict(num_hidden_layers=3, num_key_value_heads=2, use_sliding_window=True,
                                   sliding_window=3, max_window_layers=1),
}

CASES = decoder_cases("qwen2", "Qwen2Config", "Qwen2ForCausalLM", CONFIGS)
