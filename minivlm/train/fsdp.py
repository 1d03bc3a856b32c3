"""Fully sharded data parallel (FSDP2, PyTorch's `fully_shard`): DDP's math with 1/W of the memory.

    torchrun --nproc_per_node 8 -m minivlm train llava ... --strategy fsdp

DDP (distributed.py) keeps a whole copy of the weights, the gradients and AdamW's two moments on
every rank: 16 bytes per fp32 parameter, ~112 GB for a 7B model, on each GPU. FSDP (ZeRO-3, Rajbhandari
et al. 2020; Zhao et al. 2023) cuts each parameter into W equal pieces along its first dimension and
keeps only rank r's piece on rank r. What is where, and when:

    at rest          every parameter is a DTensor: rank r holds rows [r*n/W, (r+1)*n/W) of it, its
                     gradient the same rows, AdamW's moments the same rows (the optimizer only ever
                     sees the shards, so its state is sharded for free)
    forward          just before a sharded unit runs, its pieces are all-gathered into the whole
                     weights (in bf16 under --precision bf16), the unit runs, and the whole weights
                     are freed again (reshard after forward)
    backward         the unit is all-gathered again, its gradients computed whole, then
                     reduce-scattered: summed over the ranks (in fp32) and each rank keeps its rows
    optimizer step   on the local rows only; no communication

The units are each decoder layer, each vision-tower block (every module in a ModuleList called
`layers`), then the rest of the model (embeddings, projector, head, norms) as the root unit. Only one
layer is whole at a time, so a rank's peak is its shard + one layer + the activations. A frozen
part (the tower in both LLaVA stages, the LM in stage 1) is sharded the same way and never gets a
gradient: FSDP reduce-scatters only what requires grad.

Gradient accumulation: every micro-batch's backward reduce-scatters (FSDP's default). Skipping it as
DDP's no_sync does would keep whole gradients on every rank between micro-batches, the memory FSDP
exists to save. The sum is the same either way: FSDP averages over the W ranks like DDP.

The caller's model stays a plain nn.Module: `Sharded` shards a twin that shares its modules'
structure, frees the caller's parameters while training, and at the end gathers the trained weights
back into them (on the CPU, one tensor at a time), so evaluation and saving run unchanged.
"""
import copy

import torch
from torch import nn

from . import distributed

STRATEGIES = ("ddp", "fsdp")


def sharding_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP gathers one at a time: every element of a ModuleList named `layers` (the
    decoder's layers, the vision encoder's blocks), innermost-first order as named_modules gives it."""
    units = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] == "layers":
            units.extend(module)
    return units


def mixed_precision(precision: str):
    """bf16: the gathered weights and the compute in bf16, the gradient reduction and the stored
    shards (what AdamW updates) in fp32, so rounding does not pile up in the weights."""
    from torch.distributed.fsdp import MixedPrecisionPolicy
    if precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(model: nn.Module, precision: str = "fp32") -> nn.Module:
    """fully_shard each unit, then the root (in place; returns `model`). The process group must be
    up (distributed.init_from_env); the model already on this rank's device."""
    from torch.distributed.fsdp import fully_shard
    policy = mixed_precision(precision)
    for unit in sharding_units(model):
        fully_shard(unit, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


class Sharded:
    """A sharded twin of `model` for the length of a training run.

        sharded = Sharded(model, precision)   # model's parameters now empty; train sharded.net
        ...
        sharded.gather_back()                 # model holds the trained weights again (CPU)

    The twin is a deep copy whose parameters ARE the model's (copy.deepcopy's memo maps each one to
    itself), so tied weights stay tied; fully_shard then puts DTensor shards in the twin's place, and
    the model's own full tensors are released so they do not sit beside the shards."""

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        self.model = model
        self.names = {name: p for name, p in model.named_parameters()}
        self.net = copy.deepcopy(model, memo={id(p): p for p in model.parameters()})
        shard(self.net, precision)
        for p in model.parameters():
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)

    def gather_back(self) -> nn.Module:
        """All-gather each trained parameter (every rank calls this) into the caller's model, on the CPU."""
        for name, p in self.net.named_parameters():
            full = p.full_tensor() if hasattr(p, "full_tensor") else p.detach()
            self.names[name].data = full.detach().to("cpu", copy=True)
        self.model.to("cpu")  # the buffers too, so the model is on one device
        return self.model


def local_bytes(tensors) -> int:
    """Bytes this rank holds for `tensors` (a DTensor counts its local shard only)."""
    total = 0
    for t in tensors:
        if t is None:
            continue
        t = t.to_local() if hasattr(t, "to_local") else t
        total += t.numel() * t.element_size()
    return total


def training_state_bytes(parameters, optimizer) -> dict:
    """{weights, grads, optimizer}: what this rank holds of them, measured (DTensor: local shard)."""
    parameters = list(parameters)
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim() > 0]
    return dict(weights=local_bytes(parameters), grads=local_bytes(p.grad for p in parameters),
                optimizer=local_bytes(state))


def check_strategy(strategy: str):
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")


__all__ = ["STRATEGIES", "Sharded", "shard", "sharding_units", "mixed_precision", "training_state_bytes"]
