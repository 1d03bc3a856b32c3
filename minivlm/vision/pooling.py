"""Multi-head attention pooling (MAP), SigLIP's vision head (Zhai et al. 2023; big_vision's MAPHead).

Instead of reading one [CLS] token, a learned probe query attends over all patch tokens:

    probe (1, 1, D) -> attention(query=probe, keys/values=tokens)   (B, 1, D)
                    -> h + MLP(LayerNorm(h))                         (B, 1, D)
                    -> the probe's row                               (B, D)

There is no residual around the attention (the probe itself is not added back), as in the
reference. HF stores the attention as torch's nn.MultiheadAttention (a fused in_proj of q, k, v);
weights_convert splits it into the q/k/v projections of our shared Attention block.
"""
import torch
from torch import nn

from ..blocks.attention import Attention
from ..blocks.mlp import MLP
from .config import VisionConfig


class AttentionPoolingHead(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        D = cfg.hidden_size
        self.probe = nn.Parameter(torch.randn(1, 1, D) * D ** -0.5)  # (1, 1, D)
        self.attn = Attention(D, cfg.num_heads, kv_dim=D)  # cross-attention: the probe reads the tokens
        self.norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps)
        self.mlp = MLP(D, cfg.intermediate_size, act=cfg.hidden_act)

    def forward(self, x: torch.Tensor, return_probs: bool = False):  # (B, N, D) -> (B, D)
        probe = self.probe.expand(x.shape[0], -1, -1)  # (B, 1, D)
        if return_probs:  # where the probe looks: (B, H, 1, N), for pictures
            h, probs = self.attn.forward_with_probs(probe, context=x)  # (B, 1, D)
        else:
            h = self.attn(probe, context=x)  # (B, 1, D)
        h = h + self.mlp(self.norm(h))
        return (h[:, 0], probs) if return_probs else h[:, 0]
