"""ViT parity cases: tiny ViTModel / ViTForImageClassification references with odd sizes."""
import torch

from .harness import ParityCase


def pixel_inputs(reference, generator, batch=2):
    c = reference.config
    size = c.image_size if isinstance(c.image_size, (tuple, list)) else (c.image_size, c.image_size)
    return {"pixel_values": torch.randn(batch, c.num_channels, *size, generator=generator)}


def _vit(cls, **overrides):
    def build():
        import transformers
        cfg = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                   image_size=30, patch_size=6)
        cfg.update(overrides)
        return getattr(transformers, cls)(transformers.ViTConfig(**cfg))
    return build


CASES = [
    ParityCase("vit", "vit-model", _vit("ViTModel"), pixel_inputs, ("last_hidden_state", "pooler_output")),
    ParityCase("vit", "vit-model-wide-heads-no-qkv-bias",
               _vit("ViTModel", hidden_size=48, num_attention_heads=3, qkv_bias=False, layer_norm_eps=1e-6,
                    patch_size=5, image_size=35, hidden_act="gelu_new", num_hidden_layers=3),
               pixel_inputs, ("last_hidden_state", "pooler_output")),
    ParityCase("vit", "vit-model-1-channel-pooler-size",
               _vit("ViTModel", num_channels=1, pooler_output_size=20, patch_size=4, image_size=16),
               pixel_inputs, ("last_hidden_state", "pooler_output")),
    ParityCase("vit", "vit-classifier", _vit("ViTForImageClassification", num_labels=5), pixel_inputs, ("logits",)),
]
