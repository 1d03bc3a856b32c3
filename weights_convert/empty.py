"""A model without weights, then its weights put in place: how load_pretrained avoids building a
7B model in fp32 with random numbers only to overwrite them.

    with parameters_on_meta():           # every nn.Parameter lands on the meta device: a shape and
        model = build(config)            # a dtype, no memory, and its random init does nothing
    tensors = allocate(model, dtype, device)     # one empty tensor per weight, final dtype and device
    ... fill tensors from the checkpoint ...
    assign(model, tensors)               # the empty tensors become the model's parameters
    materialise_buffers(model, device)   # what __init__ computed (RoPE frequencies ...) to the device

Only parameters go to meta. Everything else __init__ computes — buffers, RoPE's inv_freq, masks —
is computed for real (it is small), so it needs no second recipe here (the idea of accelerate's
init_empty_weights(include_buffers=False)). Tied weights (lm_head = embed_tokens) are one
Parameter seen under two names; they stay one.
"""
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def parameters_on_meta():
    """Inside, every parameter a module registers is replaced by a meta tensor of its shape and dtype.
    Factories run as written (nn.Linear's torch.empty reserves memory it never touches); torch.nn.init's
    functions skip meta tensors (run on meta, normal_ would first import torch's Python reference
    kernels: seconds, measured)."""
    register = nn.Module.register_parameter
    inits = {name: fn for name, fn in vars(nn.init).items() if name.endswith("_") and not name.startswith("_")}

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != "meta":  # already meta: a tie, keep it the same object
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    def skip_meta(init):
        def maybe_init(tensor, *args, **kwargs):
            return tensor if tensor.device.type == "meta" else init(tensor, *args, **kwargs)
        return maybe_init

    nn.Module.register_parameter = register_on_meta
    for name, fn in inits.items():
        setattr(nn.init, name, skip_meta(fn))
    try:
        yield
    finally:
        nn.Module.register_parameter = register
        for name, fn in inits.items():
            setattr(nn.init, name, fn)


def _owners(model):
    """(module, attribute, full name, tensor) of every parameter and buffer, tied ones under each name."""
    for prefix, module in model.named_modules(remove_duplicate=False):
        for kind in (module._parameters, module._buffers):
            for name, t in kind.items():
                if t is not None:
                    yield module, kind, name, (f"{prefix}.{name}" if prefix else name), t


def allocate(model, dtype, device):
    """{state_dict key: empty tensor}: floating-point weights in `dtype`, others (int buffers) in their own,
    on `device`. A tensor shared under two names (tied weights) gets one allocation under both."""
    persistent = set(model.state_dict(keep_vars=True))
    out, seen = {}, {}
    for _, _, _, key, t in _owners(model):
        if key not in persistent:
            continue
        if id(t) not in seen:
            seen[id(t)] = torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype, device=device)
        out[key] = seen[id(t)]
    return out


def assign(model, tensors):
    """Make `tensors` ({state_dict key: tensor}) the model's parameters and persistent buffers, keeping
    each parameter's requires_grad and the sharing of tied parameters."""
    new = {}
    for module, kind, name, key, t in list(_owners(model)):
        if key not in tensors:
            continue
        if id(t) not in new:
            value = tensors[key]
            new[id(t)] = nn.Parameter(value, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else value
        kind[name] = new[id(t)]


def materialise_buffers(model, device):
    """Move what __init__ computed and the checkpoint does not hold (non-persistent buffers) to the
    device, in the dtype __init__ chose; then check that no meta tensor is left in the model."""
    for module, kind, name, key, t in list(_owners(model)):
        if t.device.type == "meta" and torch.device(device).type != "meta":
            raise RuntimeError(f"{key} {tuple(t.shape)} was not filled from the checkpoint nor computed by "
                               f"the model's __init__ (a parameter the key map does not cover?)")
        if kind is module._buffers and t.device != torch.device(device):
            kind[name] = t.to(device)
