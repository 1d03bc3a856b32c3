"""The pre-norm transformer layer and stack shared by ViT, CLIP/SigLIP text and every vision tower.

    x = x + attn(norm1(x))      # tokens exchange information
    x = x + mlp(norm2(x))       # each token is transformed on its own

Pre-norm (Xiong et al. 2020) keeps the residual stream un-normalised, which is why vision
towers add a final norm after the stack. BERT/BLIP text uses post-norm and has its own layer.
"""
from torch import nn

from .attention import Attention
from .mlp import MLP, SwiGLU
from .norms import RMSNorm


def make_norm(kind, dim, eps):
    """"layer" (LayerNorm) or "rms" (RMSNorm: Qwen2.5-VL's vision blocks)."""
    if kind not in ("layer", "rms"):
        raise ValueError(f"norm must be 'layer' or 'rms', got {kind!r}")
    return nn.LayerNorm(dim, eps=eps) if kind == "layer" else RMSNorm(dim, eps=eps)


class EncoderLayer(nn.Module):
    def __init__(self, dim, num_heads, mlp_dim, act="gelu", eps=1e-5, qkv_bias=True, dropout=0.0, norm="layer",
                 gated_mlp=False):
        super().__init__()
        self.norm1 = make_norm(norm, dim, eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, dropout=dropout)
        self.norm2 = make_norm(norm, dim, eps)
        # gated_mlp: SwiGLU with biases (Qwen2.5-VL's vision blocks) instead of fc1 -> act -> fc2
        self.mlp = SwiGLU(dim, mlp_dim, act=act, bias=True) if gated_mlp else MLP(dim, mlp_dim, act=act)

    def forward(self, x, mask=None, rope=None):  # (B, N, D) -> (B, N, D); rope: cos, sin (B, N, Dh)
        # x + sublayer(x), the residual added into the sublayer's output: a new tensor of its own (the
        # last linear's), so no third (B, N, D) tensor is allocated; x itself (which the caller may keep,
        # e.g. in hidden_states) is not touched, and autograd allows it (no backward reads that output).
        x = self.attn(self.norm1(x), mask=mask, rope=rope).add_(x)
        return self.mlp(self.norm2(x)).add_(x)


class Encoder(nn.Module):
    """A stack of EncoderLayers that can hand back every intermediate hidden state."""

    def __init__(self, num_layers, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, x, mask=None, output_hidden_states=False, rope=None):
        """Returns (last, hidden_states); hidden_states[0] is the input, [i] the output of layer i."""
        hidden_states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, mask=mask, rope=rope)
            if output_hidden_states:
                hidden_states.append(x)
        return x, (tuple(hidden_states) if output_hidden_states else None)

    def hidden_states_at(self, x, indices):
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
