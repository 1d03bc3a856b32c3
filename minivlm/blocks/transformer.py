"""The pre-norm transformer layer and stack shared by ViT, CLIP/SigLIP text and every vision tower.

    x = x + attn(norm1(x))      # tokens exchange information
    x = x + mlp(norm2(x))       # each token is transformed on its own

Pre-norm (Xiong et al. 2020) keeps the residual stream un-normalised, which is why vision
towers add a final norm after the stack. BERT/BLIP text uses post-norm and has its own layer.
"""
from torch import Tensor, nn

from .attention import Attention
from .mlp import make_mlp
from .norms import make_norm

Rope = tuple[Tensor, Tensor]


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, act: str = "gelu", eps: float = 1e-5,
                 qkv_bias: bool = True, dropout: float = 0.0, norm: str = "layer", gated_mlp: bool = False):
        super().__init__()
        self.norm1 = make_norm(norm, dim, eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, dropout=dropout)
        self.norm2 = make_norm(norm, dim, eps)
        # gated_mlp: SwiGLU with biases (Qwen2.5-VL's vision blocks) instead of fc1 -> act -> fc2
        self.mlp = make_mlp(dim, mlp_dim, act, gated=gated_mlp)

    def forward(self, x: Tensor, mask: Tensor | None = None, rope: Rope | None = None) -> Tensor:
        """x (B, N, D) -> (B, N, D); rope: cos, sin (B, N, Dh)."""
        x = x + self.attn(self.norm1(x), mask=mask, rope=rope)
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    """A stack of EncoderLayers that can hand back every intermediate hidden state."""

    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, x: Tensor, mask: Tensor | None = None, output_hidden_states: bool = False,
                rope: Rope | None = None) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """Returns (last, hidden_states); hidden_states[0] is the input, [i] the output of layer i."""
        hidden_states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, mask=mask, rope=rope)
            if output_hidden_states:
                hidden_states.append(x)
        return x, (tuple(hidden_states) if output_hidden_states else None)

    def hidden_states_at(self, x: Tensor, indices: list[int]) -> list[Tensor]:
        """[hidden_states[k] for k in indices], numbered as forward numbers them (0: the input, i: the
        output of layer i, negative: from the end), running only the layers up to the deepest one asked
        for and keeping only the states asked for (the others are freed as the loop moves on)."""
        wanted = [k % (len(self.layers) + 1) for k in indices]  # -1 -> the last layer's output, ...
        kept = {0: x}
        for i, layer in enumerate(self.layers[:max(wanted)], start=1):
            x = layer(x)
            if i in wanted:
                kept[i] = x
        return [kept[k] for k in wanted]
