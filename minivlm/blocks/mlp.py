"""Feed-forward blocks: the transformer MLP (fc1 -> act -> fc2) and LLaMA's SwiGLU."""
from torch import nn

from .activations import get_activation
from .fused import split_linear, stack_linears
from .linear import Linear


class MLP(nn.Module):
    """fc1 -> activation -> fc2, as in ViT, CLIP, SigLIP and BERT."""

    def __init__(self, dim, hidden_dim, act="gelu", bias=True, out_dim=None):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim, bias=bias)
        self.act = get_activation(act)
        self.act_ = get_activation(act, inplace=True)  # None where the activation has no in-place form
        self.fc2 = Linear(hidden_dim, out_dim or dim, bias=bias)

    def forward(self, x):  # (B, N, D) -> (B, N, D)
        h = self.fc1(x)  # (B, N, hidden): the largest tensor of the layer
        if h.requires_grad or self.act_ is None:
            return self.fc2(self.act(h))
        # Inference: h is ours alone, so the activation overwrites it instead of allocating another
        # (B, N, hidden) tensor. tests/test_fast_forward.py checks both branches give the same output.
        return self.fc2(self.act_(h))


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)): the gated MLP of Shazeer 2020, used by LLaMA with act=silu."""

    def __init__(self, dim, hidden_dim, act="silu", bias=False):
        super().__init__()
        self.gate_proj = Linear(dim, hidden_dim, bias=bias)
        self.up_proj = Linear(dim, hidden_dim, bias=bias)
        self.down_proj = Linear(hidden_dim, dim, bias=bias)
        self.act = get_activation(act)
        self.act_ = get_activation(act, inplace=True)
        self.gate_up_proj = None  # set by fuse(): gate_proj and up_proj stacked into one matmul

    def fuse(self, on=True):
        """One switch between the readable gate / up projections and one fused matmul (blocks/fused.py)."""
        if on and self.gate_up_proj is None:
            self.gate_up_proj = stack_linears([self.gate_proj, self.up_proj])
            del self.gate_proj, self.up_proj
        elif not on and self.gate_up_proj is not None:
            hidden = self.gate_up_proj.out_features // 2
            self.gate_proj, self.up_proj = split_linear(self.gate_up_proj, [hidden, hidden])
            self.gate_up_proj = None

    def forward(self, x):  # (B, N, D) -> (B, N, D)
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (B, N, hidden) each
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        if gate.requires_grad or self.act_ is None:
            return self.down_proj(self.act(gate) * up)
        # Inference: gate is ours alone (a fresh output, or a view of one), so act and product overwrite it.
        return self.down_proj(self.act_(gate).mul_(up))
