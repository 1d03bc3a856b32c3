"""CLIP (Radford et al. 2021): a ViT and a causal text transformer trained with a softmax contrastive loss.

CLIP adds nothing new to the towers — both are minivlm's shared modules with CLIP's switches:
    vision: [CLS] token, no patch bias, a LayerNorm before the encoder, the norm on the pooled [CLS] only
    text:   causal mask, pooled at the end-of-text token
and on top two bias-free projections into the joint space and a learned temperature.

Build from plain configs (training) or through weights_convert.load_pretrained (checkpoints):

    model = CLIPModel(CLIPConfig(text=clip_text_config(vocab_size=100, hidden_size=64, num_layers=2, num_heads=4,
                                                       intermediate_size=128, max_position_embeddings=16),
                                 vision=clip_vision_config(image_size=32, patch_size=8, hidden_size=64,
                                                           num_layers=2, num_heads=4, intermediate_size=128),
                                 projection_dim=32))
"""
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..losses.contrastive import clip_loss
from ..text.config import TextConfig
from ..text.text_transformer import TextTransformer
from ..vision.config import VisionConfig
from ..vision.vit import VisionTransformer
from .dual_encoder import DualEncoder


def clip_vision_config(**overrides):
    """A VisionConfig with CLIP's switches; overrides set the sizes (HF CLIPVisionConfig defaults otherwise)."""
    cfg = dict(image_size=224, patch_size=32, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072,
               hidden_act="quick_gelu", layer_norm_eps=1e-5,
               class_token=True, patch_bias=False, pre_norm=True, final_norm="pooled", pooler="cls")
    return VisionConfig(**{**cfg, **overrides})


def clip_text_config(**overrides):
    """A TextConfig with CLIP's switches (causal, pooled at end-of-text, no head)."""
    return TextConfig(**{**dict(causal=True, pooling="eos", head_size=None), **overrides})


@dataclass
class CLIPConfig:
    text: TextConfig = field(default_factory=clip_text_config)
    vision: VisionConfig = field(default_factory=clip_vision_config)
    projection_dim: int = 512
    logit_scale_init_value: float = math.log(1 / 0.07)  # temperature 0.07 (paper, section 2.5); HF: 2.6592


class CLIPVisionModel(VisionTransformer):
    """CLIP's vision tower alone: last_hidden_state (B, 1 + N, D), pooler_output = post-normed [CLS] (B, D)."""


class CLIPTextModel(TextTransformer):
    """CLIP's text tower alone: last_hidden_state (B, L, D), pooler_output = end-of-text state (B, D)."""


class CLIPModel(DualEncoder):
    """forward(input_ids, pixel_values, attention_mask=None, position_ids=None, return_loss=None) ->
    logits_per_image, logits_per_text, text_embeds, image_embeds (+ loss): HF CLIPModel's fields.

    The paper clips exp(logit_scale) at 100 during training; like HF, the forward does not clamp
    (a training loop clamps the parameter itself)."""

    loss_fn = staticmethod(clip_loss)

    def __init__(self, cfg: CLIPConfig):
        super().__init__(cfg.text, cfg.vision)
        self.config = cfg
        self.visual_projection = nn.Linear(cfg.vision.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init_value)))  # () scalar, log space
        self.init_embeddings()
