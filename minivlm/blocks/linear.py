"""nn.Linear, with a faster kernel for the one-row inputs of a decode step.

At batch 1 every projection of a decode step multiplies one token's vector by a weight matrix:
y = W x, a matrix-vector product whose speed is how fast W streams from memory. On CPU, torch sends
F.linear's bf16 one-row case through its general matmul (oneDNN), which reads bf16 weights well
below the machine's bandwidth; torch.mv reaches a kernel built for exactly y = W x. Measured on
this project's 2-core AVX-512 machine, 1 thread, 1.1B-shaped bf16 decode: 146 ms per token
against 201-241 ms (benchmarks: `python -m minivlm bench`). The outputs are the same bits as
F.linear's only on some CPUs and shapes (on AMD parts addmv differs with a bias, and is slower), so
the route is taken only where minivlm/fast/cpu.py's probe found it bit-equal and faster on the
running machine; every other case keeps F.linear.
"""
import torch
from torch import nn
from torch.nn import functional as F


def takes_matvec(x, weight, bias=None):
    """A single row (x (..., in) holding one vector) of a dtype the matvec kernel serves, on CPU, in
    eager mode: under torch.compile inductor rewrites torch.mv into its own loop, which for bf16 ran
    at half the speed of the matmul it picks for F.linear (measured: 3.7 against 8.1 tok/s, 1.1B)."""
    from ..fast.cpu import matvec_route_ok  # here, not at the top: fast/ imports blocks/
    return (x.device.type == "cpu" and weight.dtype == x.dtype and x.numel() == x.shape[-1]
            and not torch.compiler.is_compiling() and matvec_route_ok(x.dtype, weight, bias))


class Linear(nn.Linear):
    """An nn.Linear (same parameters, same state_dict keys) whose one-row CPU bf16 inputs use torch.mv
    where this machine's probe showed it exact and faster (fast/cpu.py)."""

    def forward(self, x):  # (..., in) -> (..., out)
        if not takes_matvec(x, self.weight, self.bias):
            return F.linear(x, self.weight, self.bias)
        v = x.reshape(-1)  # (in,)
        y = torch.mv(self.weight, v) if self.bias is None else torch.addmv(self.bias, self.weight, v)  # (out,)
        return y.view(*x.shape[:-1], -1)
