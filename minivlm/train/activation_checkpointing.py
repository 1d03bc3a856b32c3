"""Activation checkpointing: keep each layer's input, recompute its inside during backward.

A decoder layer's backward needs what its forward computed: the normed inputs, q, k, v, the attention
probabilities (or sdpa's logsumexp), the MLP's gate and up projections... about 10-20 x (B, L, D)
tensors per layer, kept from the forward until the backward reaches that layer. For a 7B model at
batch 16 x 2048 tokens that is far more than the weights. Checkpointing (Chen et al. 2016, "Training
Deep Nets with Sublinear Memory Cost") keeps only each layer's input and runs the layer's forward a
second time inside the backward: one more forward per step (~1/3 more compute) for activations of
one (B, L, D) per layer plus one layer's worth at a time.

`torch.utils.checkpoint` with use_reentrant=False does the recomputation; it works under DDP and
FSDP (the FSDP unit is gathered again for the backward anyway, and the recompute runs then).
It is applied from outside: each unit's `forward` is shadowed by an instance attribute that calls
the class's forward through checkpoint, so the model code and its parameter names do not change,
and `remove` takes it off again. Under no_grad (evaluation, generate) it is a plain call.
"""
import types

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _recomputed_forward(self, *args, **kwargs):
    forward = type(self).forward
    if not torch.is_grad_enabled():
        return forward(self, *args, **kwargs)
    return checkpoint(forward, self, *args, use_reentrant=False, **kwargs)


def apply(units: list[nn.Module]) -> list[nn.Module]:
    """Recompute each of `units` (e.g. fsdp.sharding_units(model): every decoder layer and tower block)
    in backward. A bound method (not a closure) so copy.deepcopy binds the copy to the copied layer."""
    for unit in units:
        unit.forward = types.MethodType(_recomputed_forward, unit)
    return units


def remove(units: list[nn.Module]):
    for unit in units:
        if "forward" in vars(unit):
            del unit.forward
