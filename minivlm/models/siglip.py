"""SigLIP (Zhai et al. 2023): CLIP's recipe with a sigmoid loss over every (text, image) pair.

Differences from CLIP, all switches or small additions:
    vision: no [CLS], patch bias, no pre-norm, the norm over the whole sequence, and attention
            pooling (a learned probe attends over the patches, vision/pooling.py)
    text:   bidirectional (no causal mask), pooled at the LAST position, then a Linear head
    model:  no projections (the towers' heads map into the joint space), logits get a learned
            bias: logits = exp(t) * cos + b, and the loss is losses.siglip_loss.
"""
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..losses.contrastive import siglip_loss
from ..text.config import TextConfig
from ..text.text_transformer import TextTransformer
from ..vision.config import VisionConfig
from ..vision.vit import VisionTransformer
from .dual_encoder import DualEncoder


def siglip_vision_config(use_head=True, **overrides):
    """A VisionConfig with SigLIP's switches (HF SiglipVisionConfig defaults for sizes).
    use_head=False is HF's vision_use_head=False: no attention pooling, no pooler_output."""
    cfg = dict(image_size=224, patch_size=16, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
               hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
               class_token=False, patch_bias=True, pre_norm=False, final_norm="sequence",
               pooler="attention" if use_head else "none")
    return VisionConfig(**{**cfg, **overrides})


def siglip_text_config(**overrides):
    """A TextConfig with SigLIP's switches: bidirectional, last-token pooling, a head (default width = hidden)."""
    cfg = dict(vocab_size=32000, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
               max_position_embeddings=64, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
               causal=False, pooling="last")
    cfg.update(overrides)
    if cfg.get("head_size") is None:  # HF: projection_size defaults to hidden_size
        cfg["head_size"] = cfg["hidden_size"]
    return TextConfig(**cfg)


@dataclass
class SiglipConfig:
    text: TextConfig = field(default_factory=siglip_text_config)
    vision: VisionConfig = field(default_factory=siglip_vision_config)
    logit_scale_init_value: float = math.log(10.0)   # t' = log 10 (paper, section 3.2)
    logit_bias_init_value: float = -10.0             # b = -10: most pairs are negatives

    def __post_init__(self):
        if self.text.head_size != self.vision.hidden_size:
            raise ValueError(f"SigLIP compares the text head's output ({self.text.head_size}) with the vision "
                             f"tower's pooled output ({self.vision.hidden_size}); they must be equal")
        if self.vision.pooler != "attention":
            raise ValueError("SiglipModel needs the vision attention-pooling head (vision_use_head=True)")


class SiglipVisionModel(VisionTransformer):
    """SigLIP's vision tower alone: last_hidden_state (B, N, D), pooler_output = attention-pooled (B, D)."""


class SiglipTextModel(TextTransformer):
    """SigLIP's text tower alone: last_hidden_state (B, L, D), pooler_output = head(last position) (B, E)."""


class SiglipModel(DualEncoder):
    """forward(input_ids, pixel_values, attention_mask=None, position_ids=None, return_loss=None) ->
    logits_per_image, logits_per_text, text_embeds, image_embeds (+ loss): HF SiglipModel's fields."""

    loss_fn = staticmethod(siglip_loss)

    def __init__(self, cfg: SiglipConfig):
        super().__init__(cfg.text, cfg.vision)
        self.config = cfg
        self.logit_scale = nn.Parameter(torch.tensor([float(cfg.logit_scale_init_value)]))  # (1,), log space
        self.logit_bias = nn.Parameter(torch.tensor([float(cfg.logit_bias_init_value)]))    # (1,)
        self.init_embeddings()
