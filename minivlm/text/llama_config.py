"""LlamaConfig: the decoder's hyper-parameters, field names exactly as HF's LlamaConfig.

A field of HF's config that changes the numbers is either here or refused by the family's config
translation (weights_convert/families/llama.py), which also reads the older `rope_theta` +
`rope_scaling` layout of hub config.json files into `rope_parameters`.
"""
from dataclasses import dataclass, field

from ..blocks.rotary import ROPE_TYPES


LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass
class LlamaConfig:
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None    # None: = num_attention_heads (no grouping)
    head_dim: int | None = None               # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048       # no position table: only "dynamic" RoPE reads it
    rms_norm_eps: float = 1e-6
    rope_parameters: dict = field(default_factory=lambda: {"rope_type": "default", "rope_theta": 10000.0})
    attention_bias: bool = False              # bias on q, k, v and o projections
    qkv_bias: bool = False                    # Qwen2's switch: bias on q, k, v only (o_proj has none)
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    tie_word_embeddings: bool = False         # lm_head shares the token embedding matrix
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 2       # generate() stops a row at any of these
    pad_token_id: int | None = None           # fills finished rows in generate() (None: eos)
    # Mistral's switch: a query sees itself and the sliding_window - 1 keys before it (blocks/masks.py).
    sliding_window: int | None = None
    # Which layers use it (Qwen2's per-layer choice): "full_attention" / "sliding_attention" per layer;
    # None = every layer sliding when sliding_window is set, else every layer full.
    layer_types: list | None = None

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")
        if self.layer_types is None:
            kind = "full_attention" if self.sliding_window is None else "sliding_attention"
            self.layer_types = [kind] * self.num_hidden_layers
        self.layer_types = list(self.layer_types)
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types names {len(self.layer_types)} layers, the decoder has "
                             f"num_hidden_layers={self.num_hidden_layers}")
        unknown = set(self.layer_types) - set(LAYER_TYPES)
        if unknown:
            raise ValueError(f"layer_types {sorted(unknown)} are not supported; expected {LAYER_TYPES}")
        if "sliding_attention" in self.layer_types and not self.sliding_window:
            raise ValueError(f"layer_types asks for sliding_attention but sliding_window is {self.sliding_window!r}")
        kind = self.rope_parameters.get("rope_type", self.rope_parameters.get("type", "default"))
        if kind not in ROPE_TYPES:
            raise ValueError(f"rope_type {kind!r} is not supported; expected one of {ROPE_TYPES}")

    def layer_window(self, i):
        """The sliding window of layer i, or None for full causal attention."""
        return self.sliding_window if self.layer_types[i] == "sliding_attention" else None
