"""ViTModel and ViTForImageClassification: the vision tower alone, and with a linear classifier."""
import torch.nn.functional as F
from torch import nn

from ..outputs import ModelOutput
from ..vision import VisionConfig, VisionTransformer


class ViTModel(VisionTransformer):
    """The tower with ViT's switches: [CLS], sequence norm, tanh-dense pooler."""


class ViTForImageClassification(nn.Module):
    """Tower without pooler; classifier on the normed [CLS] token (as HF's ViTForImageClassification)."""

    def __init__(self, cfg: VisionConfig, num_labels: int, problem_type: str | None = None):
        super().__init__()
        self.config = cfg
        self.num_labels = num_labels
        self.problem_type = problem_type
        self.vit = VisionTransformer(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels) if num_labels > 0 else nn.Identity()

    def forward(self, pixel_values, labels=None, interpolate_pos_encoding=False, output_hidden_states=False):
        tower = self.vit(pixel_values, interpolate_pos_encoding, output_hidden_states)
        logits = self.classifier(tower.last_hidden_state[:, 0])  # (B, num_labels)
        out = ModelOutput(logits=logits)
        if labels is not None:
            out.loss = self.loss(logits, labels)
        if output_hidden_states:
            out.hidden_states = tower.hidden_states
        return out

    def loss(self, logits, labels):
        # HF's rule: one label -> regression; integer labels -> single-label; else multi-label.
        kind = self.problem_type or ("regression" if self.num_labels == 1 else
                                     "single_label_classification" if not labels.is_floating_point() else
                                     "multi_label_classification")
        if kind == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1)) if self.num_labels == 1 \
                else F.mse_loss(logits, labels.to(logits.dtype))
        if kind == "single_label_classification":
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
