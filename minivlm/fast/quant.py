"""Weight-only int8 quantisation: each linear layer's weight stored as int8 plus one scale per output.

    W (out, in) float  ->  q = round(W / s) in [-127, 127] int8,  s = max|W[row]| / 127  (out,)
    y = x W^T  ~=  (x q^T) * s                                   (the scale applies after the matmul)

A decode step reads every weight once per token, so its speed is bounded by memory bandwidth:
int8 weights are a quarter of fp32's bytes (half of bf16's). Activations stay in the model's dtype;
the weight is converted back to it inside the matmul. Symmetric, per-output-channel scales
(as gpt-fast's int8 mode and LLM.int8's weight part) keep each row's error within s / 2.
Its budget (tests/test_fast_decode.py): next-token top-1 agreement >= 99% with the float model.
"""
import torch
from torch import nn


class Int8Linear(nn.Module):
    """A drop-in for nn.Linear holding int8 weights (out, in) and float scales (out,)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127  # (out,): the largest |w| of a row maps to 127
        self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    @classmethod
    def from_parts(cls, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> "Int8Linear":
        """An Int8Linear holding these int8 rows (out, in), scales (out,) and bias: what fusing several
        int8 projections into one (fast/fused.py) stacks."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.register_buffer("weight", weight)
        layer.register_buffer("scale", scale)
        layer.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        layer.out_features, layer.in_features = weight.shape
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if torch.compiler.is_compiling():
            # Inside a compiled decode step (fast/compiled.py): written as the sum it is, inductor makes
            # one loop that reads each int8 weight once, converts it in registers and accumulates,
            # with no dequantised copy of W in memory (inductor cannot lower the kernel below here).
            y = (x.unsqueeze(-2) * self.weight.to(x.dtype)).sum(-1) * self.scale.to(x.dtype)  # (..., out)
        elif x.device.type == "cpu" and self.in_features % 16 == 0:  # the kernel's blocking (others crash)
            # torch's CPU kernel for exactly this (int8 weights, per-row scales) reads the int8 bytes
            # directly; it is fast for bf16 activations, so fp32 ones take that route too (their
            # rounding to bf16, 2^-9 relative, is below the weights' own int8 rounding).
            flat = x.reshape(-1, x.shape[-1]).to(torch.bfloat16)  # (N, in)
            y = torch._weight_int8pack_mm(flat, self.weight, self.scale.to(torch.bfloat16))
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        else:  # dequantise in the matmul's input; torch.compile fuses the two
            y = torch.nn.functional.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int8 weights, per-output-channel scales"


def is_plain_linear(module: nn.Module) -> bool:
    """nn.Linear itself or the matvec swap of it (fast/matvec.py), not a subclass with work of its own
    (a pooler with an activation)."""
    from .matvec import MatvecLinear
    return type(module) in (nn.Linear, MatvecLinear)


def quantize_int8(model: nn.Module, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every nn.Linear under `model` by an Int8Linear (in place), except modules whose name
    ends with one of `skip`; fused projections (fast/fused.py) are linears too, quantised whole.
    A tied lm_head gets its own int8 copy; the embedding lookup stays float."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if is_plain_linear(child) and not full.endswith(tuple(skip)):
                setattr(module, child_name, Int8Linear(child))
    return model
