"""SiglipModel / SiglipVisionModel / SiglipTextModel checkpoints (google/siglip-*), as stored on disk.

The encoder layers are named as CLIP's (families/clip.py ENCODER). What differs: the patch conv
has a bias, there is no [CLS] / pre-norm, the vision head is torch's nn.MultiheadAttention with a
fused in_proj (split into our q/k/v), and the text tower has a `head` Linear.
"""
from minivlm.models.siglip import (SiglipConfig, SiglipModel, SiglipTextModel, SiglipVisionModel,
                                   siglip_text_config, siglip_vision_config)

from ..engine import KeyMap, Rule, split_in_three
from ..registry import Family, register
from .clip import ENCODER, TEXT_FIELDS, TEXT_TOWER as CLIP_TEXT_TOWER, pick, sub_config, tower_alone, vision_fields

VISION_TOWER = ENCODER + KeyMap(rules=[
    Rule("embeddings.patch_embedding.{wb}", "patch_embed.proj.{wb}"),
    Rule("embeddings.position_embedding.weight", "pos_embed"),      # (N, D): no [CLS] position
    Rule("post_layernorm.{wb}", "final_norm.{wb}"),
], skip=["embeddings.position_ids"])

# The attention-pooling head (vision/pooling.py), present when vision_use_head is true.
HEAD = KeyMap(rules=[
    Rule("head.probe", "pooler.probe"),                              # (1, 1, D) as ours
    Rule("head.attention.in_proj_weight", ("pooler.attn.q_proj.weight", "pooler.attn.k_proj.weight",
                                           "pooler.attn.v_proj.weight"), split_in_three),  # (3D, D)
    Rule("head.attention.in_proj_bias", ("pooler.attn.q_proj.bias", "pooler.attn.k_proj.bias",
                                         "pooler.attn.v_proj.bias"), split_in_three),      # (3D,)
    Rule("head.attention.out_proj.{wb}", "pooler.attn.o_proj.{wb}"),
    Rule("head.layernorm.{wb}", "pooler.norm.{wb}"),
    Rule("head.mlp.fc1.{wb}", "pooler.mlp.fc1.{wb}"),
    Rule("head.mlp.fc2.{wb}", "pooler.mlp.fc2.{wb}"),
])

TEXT_TOWER = CLIP_TEXT_TOWER + KeyMap(rules=[Rule("head.{wb}", "head.{wb}")])


def vision_config(hf):
    return siglip_vision_config(use_head=hf.get("vision_use_head", True), **vision_fields(hf))


def text_config(hf):
    return siglip_text_config(**pick(hf, {**TEXT_FIELDS, "head_size": "projection_size"}))


def vision_keymap(hf):
    return VISION_TOWER + HEAD if hf.get("vision_use_head", True) else VISION_TOWER


def siglip_keymap(hf):
    return (TEXT_TOWER.prefixed("text_model.", "text_model.")
            + vision_keymap(sub_config(hf, "vision_config")).prefixed("vision_model.", "vision_model.")
            + KeyMap(rules=[Rule("logit_scale", "logit_scale"), Rule("logit_bias", "logit_bias")]))


def siglip_config(hf):
    return SiglipConfig(text=text_config(sub_config(hf, "text_config")),
                        vision=vision_config(sub_config(hf, "vision_config")))


register("SiglipModel")(Family(name="siglip", build=lambda hf: SiglipModel(siglip_config(hf)), keymap=siglip_keymap))
register("SiglipVisionModel")(Family(name="siglip", build=lambda hf: SiglipVisionModel(vision_config(hf)),
                                     keymap=lambda hf: tower_alone(vision_keymap(hf), "vision_model.")))
register("SiglipTextModel")(Family(name="siglip", build=lambda hf: SiglipTextModel(text_config(hf)),
                                   keymap=lambda hf: tower_alone(TEXT_TOWER, "text_model.")))
