"""Opt-in speed techniques for decoding (gpt-fast's list), each proven equal to the plain path
(or, for int8, within its stated budget) by tests/test_fast_decode.py:

    compiled.py     a torch.compile'd one-token decode step over the static KV cache
    quant.py        weight-only int8 linear layers (per-output-channel scales)
    speculative.py  a draft model proposes k tokens, the target checks them in one forward

The static KV cache (blocks/kv_cache.py) and fused projections (blocks/fused.py) are shared blocks.
"""
from .compiled import CompiledDecoder
from .quant import Int8Linear, quantize_int8
from .speculative import speculative_generate
