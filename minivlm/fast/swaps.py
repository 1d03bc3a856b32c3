"""Which speed-ups a model gets by default, applied from outside (torchtitan's `parallelize` style):
the readable modules stay as they are written, and these functions swap modules under a built model.

    fast_inference(model)   the swaps shown equal, bit for bit, to what they replace, and worth it:
                            in-place activations and residuals (fast/inplace.py) everywhere, the
                            one-row matvec route (fast/matvec.py) where this CPU's probe passed it.
                            load_pretrained applies it (fast=True, its default).
    readable(model)         every swap undone: the modules as the files write them (fused
                            projections split back, so the state_dict has HF's names again).

Opt-in, not default (they change the state_dict or the numbers, or cost a compile):
fuse_projections (fast/fused.py), quantize_int8 (fast/quant.py), CompiledDecoder (fast/compiled.py).
docs/fast.md says why each default is what it is.
"""
from torch import nn

from .fused import unfuse_projections
from .inplace import inplace_inference, readable_inference
from .matvec import plain_linears, use_matvec


def fast_inference(model: nn.Module) -> nn.Module:
    """The default swaps, in place; returns the model."""
    return use_matvec(inplace_inference(model))


def readable(model: nn.Module) -> nn.Module:
    """Undo every module swap in fast/ (int8 weights stay int8: their float values are gone)."""
    return plain_linears(readable_inference(unfuse_projections(model)))
