"""CLIP parity cases: tiny CLIPModel / CLIPVisionModel / CLIPTextModel references.

Corners covered: right-padded text, the legacy end-of-text rule (eos_token_id == 2: pool at the
largest id) and the current one (first eos, with padding that reuses the eos id), quick_gelu and
gelu, images whose side is not a multiple of the patch, heads of different widths in the two
towers, projection_dim different from both hidden sizes.
"""
import torch

from .harness import ParityCase

FIELDS = ("loss", "logits_per_image", "logits_per_text", "image_embeds", "text_embeds")
TOWER_FIELDS = ("last_hidden_state", "pooler_output")


def perturb(model, std=0.05):
    """HF initialises norms to (1, 0) and some biases to 0; a key map that swapped two norms would go
    unseen. Add noise to every parameter so that every tensor matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model


def _text_ids(cfg, generator, lengths, seq_len, left_pad=False):
    """(B, L) ids and attention_mask: random content, one end-of-text token, then padding.

    The end-of-text id is the largest id of the vocabulary under the legacy rule (eos_token_id == 2)
    and cfg.eos_token_id otherwise; content ids never equal it, and include ids above it so that the
    two rules pick different positions."""
    legacy = cfg.eos_token_id == 2
    eos = cfg.vocab_size - 1 if legacy else cfg.eos_token_id
    pad = cfg.pad_token_id
    ids = torch.randint(3, cfg.vocab_size - 1, (len(lengths), seq_len), generator=generator)
    ids[ids == eos] = eos + 1 if eos + 1 < cfg.vocab_size - 1 else 3
    mask = torch.zeros(len(lengths), seq_len, dtype=torch.long)
    for row, n in enumerate(lengths):  # n real tokens, the last is end-of-text
        real = slice(seq_len - n, seq_len) if left_pad else slice(0, n)
        mask[row, real] = 1
        ids[row, ~mask[row].bool()] = pad
        ids[row, real.stop - 1] = eos
    return ids, mask


def _pixels(cfg, generator, batch):
    return torch.randn(batch, cfg.num_channels, cfg.image_size, cfg.image_size, generator=generator)


def model_inputs(lengths, seq_len, left_pad=False):
    def make(reference, generator):
        c = reference.config
        ids, mask = _text_ids(c.text_config, generator, lengths, seq_len, left_pad)
        return {"input_ids": ids, "attention_mask": mask,
                "pixel_values": _pixels(c.vision_config, generator, len(lengths)), "return_loss": True}
    return make


def text_inputs(lengths, seq_len, left_pad=False):
    def make(reference, generator):
        ids, mask = _text_ids(reference.config, generator, lengths, seq_len, left_pad)
        return {"input_ids": ids, "attention_mask": mask}
    return make


def vision_inputs(batch):
    return lambda reference, generator: {"pixel_values": _pixels(reference.config, generator, batch)}


TEXT = dict(vocab_size=61, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=11, bos_token_id=0, pad_token_id=1)
VISION = dict(hidden_size=48, intermediate_size=40, num_hidden_layers=2, num_attention_heads=3, image_size=30,
              patch_size=7)


def _clip(cls, text=None, vision=None, attn=None, **top):
    def build():
        import transformers
        t, v = {**TEXT, **(text or {})}, {**VISION, **(vision or {})}
        if cls == "CLIPModel":
            model = transformers.CLIPModel(transformers.CLIPConfig(text_config=t, vision_config=v, **top))
        elif cls == "CLIPTextModel":
            model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**t))
        else:
            model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**v))
        if attn:  # HF's by-hand kernel ("eager") instead of its default sdpa
            model.set_attn_implementation(attn)
        return perturb(model)
    return build


CASES = [
    ParityCase("clip", "clip-legacy-eos-quick-gelu-padded",
               _clip("CLIPModel", text=dict(eos_token_id=2), projection_dim=24),
               model_inputs(lengths=(7, 5, 3), seq_len=7), FIELDS),
    ParityCase("clip", "clip-eos-as-pad-gelu-odd-image",
               _clip("CLIPModel", text=dict(eos_token_id=9, pad_token_id=9, hidden_act="gelu", num_attention_heads=2,
                                            max_position_embeddings=9),
                     vision=dict(hidden_act="gelu", image_size=35, patch_size=5, num_attention_heads=6,
                                 layer_norm_eps=1e-6),
                     projection_dim=20, logit_scale_init_value=1.3),
               model_inputs(lengths=(9, 4, 6, 1), seq_len=9), FIELDS),
    ParityCase("clip", "clip-one-layer-unpadded",
               _clip("CLIPModel", text=dict(eos_token_id=50, num_hidden_layers=1),
                     vision=dict(num_hidden_layers=1, image_size=16, patch_size=4), projection_dim=8),
               model_inputs(lengths=(6, 6), seq_len=6), FIELDS),
    ParityCase("clip", "clip-text-legacy-eos-padded", _clip("CLIPTextModel", text=dict(eos_token_id=2)),
               text_inputs(lengths=(8, 2, 5), seq_len=8), TOWER_FIELDS),
    ParityCase("clip", "clip-text-new-eos-max-length", _clip("CLIPTextModel", text=dict(eos_token_id=7)),
               text_inputs(lengths=(11, 3), seq_len=11), TOWER_FIELDS),
    # Left padding: a padded query sees no key at all (causal AND padding); HF's eager kernel then
    # spreads it uniformly over masked keys: garbage, so those positions are not compared.
    ParityCase("clip", "clip-text-left-padded-eager", _clip("CLIPTextModel", text=dict(eos_token_id=7), attn="eager"),
               text_inputs(lengths=(8, 2, 5), seq_len=8, left_pad=True), TOWER_FIELDS,
               valid_positions=lambda inputs: inputs["attention_mask"].bool()),
    ParityCase("clip", "clip-vision", _clip("CLIPVisionModel"), vision_inputs(2), TOWER_FIELDS),
    ParityCase("clip", "clip-vision-gelu-wide-heads",
               _clip("CLIPVisionModel", vision=dict(hidden_act="gelu", num_attention_heads=2, image_size=33,
                                                    patch_size=11, num_channels=1)),
               vision_inputs(3), TOWER_FIELDS),
]
