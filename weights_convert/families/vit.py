"""ViTModel / ViTForImageClassification checkpoints (google/vit-*), as stored on disk."""
from dataclasses import replace

from minivlm.models.vit import ViTForImageClassification, ViTModel
from minivlm.vision import VisionConfig

from ..engine import KeyMap, Rule, squeeze_leading
from ..registry import Family, register


def vision_config(hf):
    return VisionConfig(
        image_size=hf.get("image_size", 224), patch_size=hf.get("patch_size", 16),
        num_channels=hf.get("num_channels", 3), hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], hidden_act=hf.get("hidden_act", "gelu"),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), qkv_bias=hf.get("qkv_bias", True),
        pooler_output_size=hf.get("pooler_output_size"), pooler_act=hf.get("pooler_act", "tanh"),
        # ViT switches: [CLS], patch bias, no pre-norm, norm over the sequence.
        class_token=True, patch_bias=True, pre_norm=False, final_norm="sequence",
    )


LAYER = "encoder.layer.{i}."
OURS = "encoder.layers.{i}."

TOWER = KeyMap(rules=[
    Rule("embeddings.cls_token", "cls_token", squeeze_leading(2)),                  # (1, 1, D) -> (D,)
    Rule("embeddings.position_embeddings", "pos_embed", squeeze_leading(1)),        # (1, 1+N, D) -> (1+N, D)
    Rule("embeddings.patch_embeddings.projection.{wb}", "patch_embed.proj.{wb}"),
    Rule(LAYER + "layernorm_before.{wb}", OURS + "norm1.{wb}"),
    Rule(LAYER + "attention.attention.query.{wb}", OURS + "attn.q_proj.{wb}"),
    Rule(LAYER + "attention.attention.key.{wb}", OURS + "attn.k_proj.{wb}"),
    Rule(LAYER + "attention.attention.value.{wb}", OURS + "attn.v_proj.{wb}"),
    Rule(LAYER + "attention.output.dense.{wb}", OURS + "attn.o_proj.{wb}"),
    Rule(LAYER + "layernorm_after.{wb}", OURS + "norm2.{wb}"),
    Rule(LAYER + "intermediate.dense.{wb}", OURS + "mlp.fc1.{wb}"),
    Rule(LAYER + "output.dense.{wb}", OURS + "mlp.fc2.{wb}"),
    Rule("layernorm.{wb}", "final_norm.{wb}"),
])
POOLER = KeyMap(rules=[Rule("pooler.dense.{wb}", "pooler.{wb}")])


register("ViTModel")(Family(
    name="vit",
    build=lambda hf: ViTModel(vision_config(hf)),
    keymap=lambda hf: TOWER + POOLER,
))


def _num_labels(hf):
    return hf.get("num_labels") or len(hf.get("id2label") or {}) or 2


register("ViTForImageClassification")(Family(
    name="vit",
    build=lambda hf: ViTForImageClassification(replace(vision_config(hf), pooler="none"), _num_labels(hf),
                                                hf.get("problem_type")),
    # The classification checkpoint stores the tower under "vit." and has no pooler.
    keymap=lambda hf: TOWER.prefixed("vit.", "vit.") + KeyMap([Rule("classifier.{wb}", "classifier.{wb}")]),
))
