"""Feed-forward blocks: the transformer MLP (fc1 -> act -> fc2) and LLaMA's SwiGLU."""
from torch import nn

from .activations import get_activation


class MLP(nn.Module):
    """fc1 -> activation -> fc2, as in ViT, CLIP, SigLIP and BERT."""

    def __init__(self, dim, hidden_dim, act="gelu", bias=True, out_dim=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = get_activation(act)
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim, bias=bias)

    def forward(self, x):  # (B, N, D) -> (B, N, D)
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)): the gated MLP of Shazeer 2020, used by LLaMA with act=silu."""

    def __init__(self, dim, hidden_dim, act="silu", bias=False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=bias)
        self.act = get_activation(act)

    def forward(self, x):  # (B, N, D) -> (B, N, D)
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
