"""Activation functions by the names HF configs use (`hidden_act`): plain functions of a tensor.

The in-place forms an inference run may use instead live in minivlm/fast/inplace.py.
"""
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def quick_gelu(x: Tensor) -> Tensor:
    # CLIP's approximation x * sigmoid(1.702 x) (openai/CLIP model.py); not the tanh gelu.
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


def gelu_fast(x: Tensor) -> Tensor:
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


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    """The function for a config's `hidden_act`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
