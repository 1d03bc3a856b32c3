"""Save a model trained here as a Hugging Face model folder: config.json + model.safetensors with HF's
key names. weights_convert.load_pretrained (strict) loads it back, and so does transformers.

The key names are not written twice: the family's KeyMap (weights_convert/families/*) says how a
stored key becomes ours; `invert` runs it backwards. So a trained model is also a test of the map.

    save_pretrained(model, "runs/clip", clip_hf_config(model.config))
    weights_convert.load_pretrained("runs/clip")        # the same model, eval()

BLIP / LLaVA recipes add an `*_hf_config(config) -> dict` and reuse save_pretrained as is.
"""
import json
from pathlib import Path

import torch



def _inverse_transform(rule):
    """Our tensor(s) -> the stored tensor. Only the transforms CLIP/SigLIP use are known; others raise."""
    from weights_convert.engine import split_in_three
    if rule.transform is None:
        return lambda tensors: tensors[0]
    if rule.transform is split_in_three:
        return lambda tensors: torch.cat(tensors, dim=0)  # q, k, v -> the fused (3D, ...) in_proj
    if hasattr(rule.transform, "inverse"):  # e.g. squeeze_leading: (D,) -> the stored (1, 1, D)
        return lambda tensors: rule.transform.inverse(tensors[0])
    raise NotImplementedError(f"no inverse for the transform of rule {rule.file!r}; add one in train/export.py")


def invert(keymap, state_dict):
    """Our state dict -> {stored key: tensor} (weights_convert.names: the first rule for each key wins)."""
    from weights_convert.names import stored_names
    out, done = {}, set()
    for rule, stored, names in stored_names(keymap, state_dict):
        out[stored] = _inverse_transform(rule)([state_dict[n] for n in names])
        done.update(names)
    left = [k for k in state_dict if k not in done and k not in set(keymap.tied)]
    if left:
        raise ValueError(f"{len(left)} tensor(s) of the model have no rule in the key map, e.g. {left[:5]}")
    return out


def save_pretrained(model, folder, hf_config):
    """Write config.json (hf_config, whose architectures[0] picks the key map) and model.safetensors."""
    from safetensors.torch import save_file

    from weights_convert.registry import family_for
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keymap = family_for(hf_config, folder).keymap(hf_config)
    state = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    stored = {k: v.contiguous().clone() for k, v in invert(keymap, state).items()}  # no shared storage
    save_file(stored, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return folder


# -- HF config.json dicts for the models trained here ----------------------------------------------

def _tower(cfg, text):
    common = dict(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                  num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, hidden_act=cfg.hidden_act,
                  layer_norm_eps=cfg.layer_norm_eps, attention_dropout=cfg.attention_dropout)
    if text:
        return dict(common, vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_position_embeddings,
                    pad_token_id=cfg.pad_token_id)
    return dict(common, image_size=cfg.image_size, patch_size=cfg.patch_size, num_channels=cfg.num_channels)


def clip_hf_config(cfg, bos_token_id=None):
    """CLIPConfig (ours) -> the dict transformers' CLIPConfig writes (the fields weights_convert reads).
    bos_token_id: the tokenizer's, so that HF's config checks see ids inside the vocabulary."""
    text = dict(_tower(cfg.text, True), model_type="clip_text_model", eos_token_id=cfg.text.eos_token_id,
                bos_token_id=bos_token_id, projection_dim=cfg.projection_dim)
    vision = dict(_tower(cfg.vision, False), model_type="clip_vision_model", projection_dim=cfg.projection_dim)
    return dict(architectures=["CLIPModel"], model_type="clip", projection_dim=cfg.projection_dim,
                logit_scale_init_value=cfg.logit_scale_init_value, text_config=text, vision_config=vision)


def siglip_hf_config(cfg, bos_token_id=None, eos_token_id=None):
    """SiglipConfig (ours) -> the dict transformers' SiglipConfig writes. The model reads no special
    token (it pools the last position); they are written so HF's defaults (49406...) are not."""
    text = dict(_tower(cfg.text, True), model_type="siglip_text_model", projection_size=cfg.text.head_size,
                bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    vision = dict(_tower(cfg.vision, False), model_type="siglip_vision_model", vision_use_head=True)
    return dict(architectures=["SiglipModel"], model_type="siglip", text_config=text, vision_config=vision)
