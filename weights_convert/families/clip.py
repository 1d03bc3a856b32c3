"""CLIPModel / CLIPVisionModel / CLIPTextModel checkpoints (openai/clip-*, laion CLIP), as stored on disk.

Reusable pieces for other families:
    ENCODER        HF's CLIP-style encoder layers (SigLIP's are named the same)
    VISION_TOWER   a CLIP vision tower's keys relative to its own root (embeddings.*, pre_layrnorm.*, ...)
    TEXT_TOWER     a CLIP text tower's keys relative to its own root
    vision_config(hf_vision_dict) -> VisionConfig with CLIP's switches
LLaVA stores the tower as `vision_tower.vision_model.*` in hub files and `vision_tower.*` /
`model.vision_tower.*` when transformers 5 saves it: `VISION_TOWER.prefixed("vision_tower.vision_model.",
"vision_tower.")` and so on.
"""
from minivlm.models.clip import (CLIPConfig, CLIPModel, CLIPTextModel, CLIPVisionModel, clip_text_config,
                                 clip_vision_config)

from ..engine import KeyMap, Rule
from ..registry import Family, register

LAYER = "encoder.layers.{i}."
OURS = "encoder.layers.{i}."

ENCODER = KeyMap(rules=[
    Rule(LAYER + "layer_norm1.{wb}", OURS + "norm1.{wb}"),
    Rule(LAYER + "self_attn.q_proj.{wb}", OURS + "attn.q_proj.{wb}"),
    Rule(LAYER + "self_attn.k_proj.{wb}", OURS + "attn.k_proj.{wb}"),
    Rule(LAYER + "self_attn.v_proj.{wb}", OURS + "attn.v_proj.{wb}"),
    Rule(LAYER + "self_attn.out_proj.{wb}", OURS + "attn.o_proj.{wb}"),
    Rule(LAYER + "layer_norm2.{wb}", OURS + "norm2.{wb}"),
    Rule(LAYER + "mlp.fc1.{wb}", OURS + "mlp.fc1.{wb}"),
    Rule(LAYER + "mlp.fc2.{wb}", OURS + "mlp.fc2.{wb}"),
])

# position_ids: a buffer that transformers < 4.31 saved into checkpoints; not a weight.
VISION_TOWER = ENCODER + KeyMap(rules=[
    Rule("embeddings.class_embedding", "cls_token"),                         # (D,) as ours
    Rule("embeddings.patch_embedding.weight", "patch_embed.proj.weight"),   # no bias in CLIP
    Rule("embeddings.position_embedding.weight", "pos_embed"),              # nn.Embedding table (1+N, D)
    Rule("pre_layrnorm.{wb}", "pre_norm.{wb}"),                             # sic: HF's spelling
    Rule("post_layernorm.{wb}", "final_norm.{wb}"),
], skip=["embeddings.position_ids"])

TEXT_TOWER = ENCODER + KeyMap(rules=[
    Rule("embeddings.token_embedding.weight", "token_embed.weight"),
    Rule("embeddings.position_embedding.weight", "pos_embed.weight"),
    Rule("final_layer_norm.{wb}", "final_norm.{wb}"),
], skip=["embeddings.position_ids"])


def tower_alone(tower, file_prefix):
    """A tower saved on its own: transformers 5 writes its keys at the root, older versions (and the
    hub's files) under `vision_model.` / `text_model.`. A file holds one form; both are accepted."""
    return tower + tower.prefixed(file_prefix, "")


def _square(value, name):
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"{name}={value}: only square {name} is supported by this tower")
        return value[0]
    return value


# HF config field -> ours, for the towers built on CLIP's (CLIP, SigLIP, BLIP's vision tower).
VISION_FIELDS = dict(image_size="image_size", patch_size="patch_size", num_channels="num_channels",
                     hidden_size="hidden_size", num_layers="num_hidden_layers", num_heads="num_attention_heads",
                     intermediate_size="intermediate_size", hidden_act="hidden_act",
                     layer_norm_eps="layer_norm_eps", attention_dropout="attention_dropout")
TEXT_FIELDS = dict(vocab_size="vocab_size", hidden_size="hidden_size", num_layers="num_hidden_layers",
                   num_heads="num_attention_heads", intermediate_size="intermediate_size",
                   max_position_embeddings="max_position_embeddings", hidden_act="hidden_act",
                   layer_norm_eps="layer_norm_eps", attention_dropout="attention_dropout",
                   pad_token_id="pad_token_id")


def pick(hf, fields, defaults=()):
    """Our config kwargs from an HF config dict: the file's value where it has one, else the default
    (HF's own default for that field; the file omits fields equal to it)."""
    return {**dict(defaults), **{ours: hf[theirs] for ours, theirs in fields.items() if theirs in hf}}


def vision_fields(hf, defaults=()):
    cfg = pick(hf, VISION_FIELDS, defaults)
    if "patch_size" in cfg:
        cfg["patch_size"] = _square(cfg["patch_size"], "patch_size")
    return cfg


def vision_config(hf):
    """HF CLIPVisionConfig dict -> VisionConfig with CLIP's switches (missing fields: HF's defaults)."""
    return clip_vision_config(**vision_fields(hf))


def text_config(hf):
    """HF CLIPTextConfig dict -> TextConfig with CLIP's switches."""
    defaults = dict(vocab_size=49408, hidden_size=512, num_layers=12, num_heads=8, intermediate_size=2048,
                    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, eos_token_id=49407)
    cfg = pick(hf, {**TEXT_FIELDS, "eos_token_id": "eos_token_id"}, defaults)
    if not isinstance(cfg["eos_token_id"], int):
        raise ValueError(f"text eos_token_id must be one integer (CLIP pools at it), got {cfg['eos_token_id']!r}")
    return clip_text_config(**cfg)


def sub_config(hf, name):
    """text_config / vision_config of a CLIPConfig dict; very old files also carry `*_config_dict`."""
    return {**(hf.get(name) or {}), **(hf.get(name + "_dict") or {})}


def clip_config(hf):
    return CLIPConfig(text=text_config(sub_config(hf, "text_config")),
                      vision=vision_config(sub_config(hf, "vision_config")),
                      projection_dim=hf.get("projection_dim", 512),
                      logit_scale_init_value=hf.get("logit_scale_init_value", 2.6592))


MODEL = (TEXT_TOWER.prefixed("text_model.", "text_model.") + VISION_TOWER.prefixed("vision_model.", "vision_model.")
         + KeyMap(rules=[Rule("visual_projection.weight", "visual_projection.weight"),
                         Rule("text_projection.weight", "text_projection.weight"),
                         Rule("logit_scale", "logit_scale")]))

register("CLIPModel")(Family(name="clip", build=lambda hf: CLIPModel(clip_config(hf)), keymap=lambda hf: MODEL))
register("CLIPVisionModel")(Family(name="clip", build=lambda hf: CLIPVisionModel(vision_config(hf)),
                                   keymap=lambda hf: tower_alone(VISION_TOWER, "vision_model.")))
register("CLIPTextModel")(Family(name="clip", build=lambda hf: CLIPTextModel(text_config(hf)),
                                 keymap=lambda hf: tower_alone(TEXT_TOWER, "text_model.")))
