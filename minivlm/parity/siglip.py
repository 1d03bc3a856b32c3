"""SigLIP parity cases: tiny SiglipModel / SiglipVisionModel / SiglipTextModel references.

Corners: padded text with and without an attention_mask (SigLIP's processor pads to a fixed
length and passes no mask; the pooled last position is then a pad token), images whose side is
not a multiple of the patch, towers with heads of different widths, a text head wider than the
text tower, a vision tower without the attention-pooling head, logit_scale and a NEGATIVE
logit_bias set away from HF's zero init so that both enter the loss.
"""
import torch

from .clip import _pixels, _text_ids, perturb, vision_inputs
from .harness import ParityCase

FIELDS = ("loss", "logits_per_image", "logits_per_text", "image_embeds", "text_embeds")
TOWER_FIELDS = ("last_hidden_state", "pooler_output")

TEXT = dict(vocab_size=53, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=10, bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_size=48)
VISION = dict(hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3, image_size=30,
              patch_size=7)


def _inputs(lengths, seq_len, with_mask=True, towers="model"):
    def make(reference, generator):
        c = reference.config
        text_cfg = c if towers == "text" else c.text_config
        # _text_ids pools at eos under CLIP's rules; SigLIP ignores that and pools the last position.
        ids, mask = _text_ids(text_cfg, generator, lengths, seq_len)
        inputs = {"input_ids": ids}
        if with_mask:
            inputs["attention_mask"] = mask
        if towers == "model":
            inputs.update(pixel_values=_pixels(c.vision_config, generator, len(lengths)), return_loss=True)
        return inputs
    return make


def _siglip(cls, text=None, vision=None, logit_scale=2.1, logit_bias=-3.7):
    def build():
        import transformers
        t, v = {**TEXT, **(text or {})}, {**VISION, **(vision or {})}
        if cls == "SiglipModel":
            model = transformers.SiglipModel(transformers.SiglipConfig(text_config=t, vision_config=v))
        elif cls == "SiglipTextModel":
            model = transformers.SiglipTextModel(transformers.SiglipTextConfig(**t))
        else:
            model = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**v))
        perturb(model)
        if cls == "SiglipModel":  # HF initialises both to 0: a mapping error there would go unseen
            with torch.no_grad():
                model.logit_scale.fill_(logit_scale)
                model.logit_bias.fill_(logit_bias)
        return model
    return build


CASES = [
    ParityCase("siglip", "siglip-padded-with-mask", _siglip("SiglipModel"),
               _inputs(lengths=(7, 5, 3), seq_len=7), FIELDS),
    ParityCase("siglip", "siglip-padded-no-mask-odd-image-gelu",
               _siglip("SiglipModel", text=dict(hidden_act="gelu", num_attention_heads=2, projection_size=36),
                       vision=dict(hidden_size=36, num_attention_heads=6, image_size=35, patch_size=5,
                                   hidden_act="gelu", layer_norm_eps=1e-5), logit_scale=0.7, logit_bias=1.5),
               _inputs(lengths=(10, 4, 6, 1), seq_len=10, with_mask=False), FIELDS),
    ParityCase("siglip", "siglip-one-layer", _siglip("SiglipModel", text=dict(num_hidden_layers=1),
                                                     vision=dict(num_hidden_layers=1, image_size=16, patch_size=4)),
               _inputs(lengths=(6, 6), seq_len=6), FIELDS),
    ParityCase("siglip", "siglip-text-padded", _siglip("SiglipTextModel", text=dict(projection_size=20)),
               _inputs(lengths=(8, 2, 5), seq_len=8, towers="text"), TOWER_FIELDS),
    ParityCase("siglip", "siglip-vision", _siglip("SiglipVisionModel"), vision_inputs(2), TOWER_FIELDS),
    ParityCase("siglip", "siglip-vision-no-head-1-channel",
               _siglip("SiglipVisionModel", vision=dict(vision_use_head=False, num_channels=1, image_size=33,
                                                        patch_size=11, num_attention_heads=2)),
               vision_inputs(3), ("last_hidden_state",)),
]
