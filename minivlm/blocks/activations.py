"""Activation functions by the names HF configs use (`hidden_act`)."""
import math

import torch
import torch.nn.functional as F


def quick_gelu(x):
    # CLIP's approximation x * sigmoid(1.702 x) (openai/CLIP model.py); not the tanh gelu.
    if torch.is_grad_enabled() and x.requires_grad:
        return x * torch.sigmoid(1.702 * x)
    # Inference: the same three ops, bit for bit, but sigmoid and the product overwrite the one
    # temporary instead of allocating two more (B, N, 4D) tensors (autograd would need them).
    return torch.mul(x, 1.702).sigmoid_().mul_(x)


def quick_gelu_(x):
    """quick_gelu overwriting x: the same three ops, bit for bit, with one temporary for
    sigmoid(1.702 x) (the product needs x and it at once) where quick_gelu's inference form keeps two
    tensors alive. For MLP's own fc1 output at inference (mlp.py); never on a tensor someone holds.
    (silu(1.702 x) / 1.702 would need no temporary, but rounds twice more: the trace's 0.0 against
    transformers at every stage is worth one (B, N, 4D) tensor.)"""
    return x.mul_(torch.mul(x, 1.702).sigmoid_())


def gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def gelu_fast(x):
    # HF's "gelu_fast": the tanh formula written with 0.7978845608 = sqrt(2/pi).
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x * (1.0 + 0.044715 * x * x)))


ACTIVATIONS = {
    "gelu": F.gelu,                      # exact, erf-based
    "gelu_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,               # HF's name for the tanh approximation (GPT-2 / BERT era)
    "gelu_pytorch_tanh": gelu_tanh,      # SigLIP's configs say this
    "gelu_fast": gelu_fast,
    "quick_gelu": quick_gelu,
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "tanh": torch.tanh,
}


# The same functions overwriting their input (same kernels, bit for bit): at
# inference an MLP applies them to its own fc1 output, which saves one (B, N, hidden) tensor per layer —
# on the CPU a fresh tensor that large is often fresh pages from the OS, each faulted in on first write.
def gelu_(x):
    return torch.ops.aten.gelu_(x)


def gelu_tanh_(x):
    return torch.ops.aten.gelu_(x, approximate="tanh")


def silu_(x):
    return F.silu(x, inplace=True)


INPLACE = {"gelu": gelu_, "gelu_tanh": gelu_tanh_, "gelu_new": gelu_tanh_, "gelu_pytorch_tanh": gelu_tanh_,
           "quick_gelu": quick_gelu_, "silu": silu_, "swish": silu_, "relu": F.relu_, "tanh": torch.tanh_}


def get_activation(name, inplace=False):
    """The function for a config's `hidden_act`. inplace=True: the variant that overwrites its input
    (None where there is none, e.g. gelu_fast); only for tensors nobody else holds, without autograd."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return INPLACE.get(name) if inplace else ACTIVATIONS[name]
