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


def get_activation(name):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None
