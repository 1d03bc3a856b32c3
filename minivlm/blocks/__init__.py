"""Small shared building blocks; every model in minivlm is composed of these."""
from .activations import get_activation
from .attention import Attention, attention_manual, attention_sdpa, set_attention_impl
from .kv_cache import KVCache, LayerCache, StaticKVCache
from .masks import causal_mask, combine, padding_mask
from .mlp import MLP, SwiGLU, make_mlp
from .norms import RMSNorm, make_norm
from .rotary import apply_rotary, default_inv_freq, rope_cos_sin
