"""Small shared building blocks; every model in minivlm is composed of these."""
from .activations import get_activation
from .attention import Attention, attention_manual, attention_sdpa, get_attention_impl, set_attention_impl
from .kv_cache import KVCache, LayerCache, StaticKVCache
from .masks import causal_mask, combine, padding_mask
from .mlp import MLP, SwiGLU
from .norms import LayerNorm, RMSNorm
from .rotary import apply_rotary, default_inv_freq, rope_cos_sin
