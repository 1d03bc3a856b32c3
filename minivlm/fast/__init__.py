"""Speed-ups as module swaps applied to a built model from outside (gpt-fast's list), each proven
equal to the module it replaces (or, for int8, within its stated budget) by tests/test_fast_*.py.
The readable modules in blocks/, text/, vision/ contain none of them.

    swaps.py        fast_inference (the defaults load_pretrained applies) and readable (undo all)
    inplace.py      in-place activations and residual adds at inference
    matvec.py       the one-row CPU torch.mv route, where this machine's probe (cpu.py) passed it
    fused.py        q|k|v and gate|up projections as one matmul each
    quant.py        weight-only int8 linear layers (per-output-channel scales)
    compiled.py     a torch.compile'd one-token decode step over the static KV cache
    speculative.py  a draft model proposes k tokens, the target checks them in one forward
"""
from .compiled import CompiledDecoder
from .fused import fuse_projections, unfuse_projections
from .inplace import inplace_inference, readable_inference
from .quant import Int8Linear, quantize_int8
from .speculative import speculative_generate
from .swaps import fast_inference, readable
