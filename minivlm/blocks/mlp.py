"""Feed-forward blocks: the transformer MLP (fc1 -> act -> fc2) and LLaMA's SwiGLU.

Which one a layer uses is decided once, at construction (`make_mlp`), from the config's switch.
"""
from torch import Tensor, nn

from .activations import get_activation


class MLP(nn.Module):
    """fc1 -> activation -> fc2, as in ViT, CLIP, SigLIP and BERT."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu", bias: bool = True, out_dim: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = get_activation(act)
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, N, D) -> (B, N, D)
        return self.fc2(self.act(self.fc1(x)))  # fc1's output (B, N, hidden) is the layer's largest tensor


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)): the gated MLP of Shazeer 2020, used by LLaMA with act=silu."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "silu", bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=bias)
        self.act = get_activation(act)

    def forward(self, x: Tensor) -> Tensor:  # (B, N, D) -> (B, N, D)
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def make_mlp(dim: int, hidden_dim: int, act: str, gated: bool, bias: bool = True) -> nn.Module:
    """The MLP kind a config asks for (litgpt's mlp_class): SwiGLU when gated, else fc1 -> act -> fc2."""
    return SwiGLU(dim, hidden_dim, act=act, bias=bias) if gated else MLP(dim, hidden_dim, act=act, bias=bias)
