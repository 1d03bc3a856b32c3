"""BLIP checkpoints (Salesforce/blip-*): captioning, retrieval (ITM/ITC) and VQA, as stored on disk.

    vision_model.*                      the ViT (fused qkv, `projection` for the output)
    text_decoder.bert.* + .cls.*        the image-grounded decoder and its LM head (captioning, VQA)
    text_encoder.*                      the (image-grounded) encoder (retrieval, VQA)
    vision_proj, text_proj, itm_head    the retrieval heads
"""
from minivlm.models.blip import (BlipConfig, BlipForConditionalGeneration, BlipForImageTextRetrieval,
                                 BlipForQuestionAnswering, blip_vision_config)
from minivlm.text.bert import BertConfig

from ..engine import KeyMap, Rule, split_in_three, squeeze_leading
from ..registry import Family, register
from .clip import vision_fields


def vision_config(v):
    defaults = dict(image_size=384, patch_size=16, hidden_size=768, num_layers=12, num_heads=12,
                    intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-5)
    return blip_vision_config(**{**vision_fields(v, defaults), "num_channels": 3})


def text_config(t, vision_width):
    return BertConfig(
        vocab_size=t.get("vocab_size", 30524), hidden_size=t.get("hidden_size", 768),
        num_layers=t.get("num_hidden_layers", 12), num_heads=t.get("num_attention_heads", 8),
        intermediate_size=t.get("intermediate_size", 3072),
        max_position_embeddings=t.get("max_position_embeddings", 512), hidden_act=t.get("hidden_act", "gelu"),
        layer_norm_eps=t.get("layer_norm_eps", 1e-12),
        attention_dropout=t.get("attention_probs_dropout_prob", 0.0), hidden_dropout=t.get("hidden_dropout_prob", 0.0),
        # HF builds the cross-attention sub-layers when the text config says is_decoder (its default).
        cross_attention=t.get("is_decoder", True),
        encoder_hidden_size=vision_width,  # BlipConfig sets it to the vision width, whatever the file says
        pad_token_id=t.get("pad_token_id", 0), bos_token_id=t.get("bos_token_id", 30522),
        sep_token_id=t.get("sep_token_id", 102), label_smoothing=t.get("label_smoothing", 0.0))


def blip_config(hf):
    vision = vision_config(hf.get("vision_config") or {})
    return BlipConfig(vision=vision, text=text_config(hf.get("text_config") or {}, vision.hidden_size),
                      image_text_hidden_size=hf.get("image_text_hidden_size", 256))


L = "encoder.layers.{i}."  # the same layout on both sides
VISION = KeyMap(rules=[
    Rule("embeddings.class_embedding", "cls_token", squeeze_leading(2)),          # (1, 1, D) -> (D,)
    Rule("embeddings.position_embedding", "pos_embed", squeeze_leading(1)),       # (1, 1+N, D) -> (1+N, D)
    Rule("embeddings.patch_embedding.{wb}", "patch_embed.proj.{wb}"),
    Rule(L + "layer_norm1.{wb}", L + "norm1.{wb}"),
    # One fused (3D, D) projection in the file; q, k, v thirds in that order (BlipAttention's reshape).
    Rule(L + "self_attn.qkv.{wb}", (L + "attn.q_proj.{wb}", L + "attn.k_proj.{wb}", L + "attn.v_proj.{wb}"),
         split_in_three),
    Rule(L + "self_attn.projection.{wb}", L + "attn.o_proj.{wb}"),
    Rule(L + "layer_norm2.{wb}", L + "norm2.{wb}"),
    Rule(L + "mlp.fc1.{wb}", L + "mlp.fc1.{wb}"),
    Rule(L + "mlp.fc2.{wb}", L + "mlp.fc2.{wb}"),
    Rule("post_layernorm.{wb}", "final_norm.{wb}"),
]).prefixed("vision_model.", "vision_model.")

T, TO = "encoder.layer.{i}.", "layers.{i}."
TEXT = KeyMap(rules=[
    Rule("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight"),
    Rule("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
    Rule("embeddings.LayerNorm.{wb}", "embeddings.norm.{wb}"),
    Rule(T + "attention.self.query.{wb}", TO + "self_attn.q_proj.{wb}"),
    Rule(T + "attention.self.key.{wb}", TO + "self_attn.k_proj.{wb}"),
    Rule(T + "attention.self.value.{wb}", TO + "self_attn.v_proj.{wb}"),
    Rule(T + "attention.output.dense.{wb}", TO + "self_attn.o_proj.{wb}"),
    Rule(T + "attention.output.LayerNorm.{wb}", TO + "self_attn_norm.{wb}"),
    Rule(T + "crossattention.self.query.{wb}", TO + "cross_attn.q_proj.{wb}"),
    Rule(T + "crossattention.self.key.{wb}", TO + "cross_attn.k_proj.{wb}"),
    Rule(T + "crossattention.self.value.{wb}", TO + "cross_attn.v_proj.{wb}"),
    Rule(T + "crossattention.output.dense.{wb}", TO + "cross_attn.o_proj.{wb}"),
    Rule(T + "crossattention.output.LayerNorm.{wb}", TO + "cross_attn_norm.{wb}"),
    Rule(T + "intermediate.dense.{wb}", TO + "mlp.fc1.{wb}"),
    Rule(T + "output.dense.{wb}", TO + "mlp.fc2.{wb}"),
    Rule(T + "output.LayerNorm.{wb}", TO + "mlp_norm.{wb}"),
], skip=["embeddings.position_ids"])  # a non-persistent arange buffer some older files still hold

LM_HEAD = KeyMap(rules=[
    Rule("cls.predictions.transform.dense.{wb}", "head.transform.{wb}"),
    Rule("cls.predictions.transform.LayerNorm.{wb}", "head.norm.{wb}"),
    Rule("cls.predictions.bias", "head.decoder.bias"),
    # transformers 5 leaves the tied projection out of the file; older files store it (same values).
    Rule("cls.predictions.decoder.weight", "head.decoder.weight"),
], skip=["cls.predictions.decoder.bias"],  # HF's second name for cls.predictions.bias
    tied={"head.decoder.weight": "embeddings.word_embeddings.weight"})

DECODER = (TEXT.prefixed("bert.", "") + LM_HEAD).prefixed("text_decoder.", "text_decoder.")
ENCODER = TEXT.prefixed("text_encoder.", "text_encoder.")
RETRIEVAL_HEADS = KeyMap(rules=[Rule("vision_proj.{wb}", "vision_proj.{wb}"), Rule("text_proj.{wb}", "text_proj.{wb}"),
                                Rule("itm_head.{wb}", "itm_head.{wb}")])

register("BlipForConditionalGeneration")(Family(
    name="blip", build=lambda hf: BlipForConditionalGeneration(blip_config(hf)), keymap=lambda hf: VISION + DECODER))
register("BlipForImageTextRetrieval")(Family(
    name="blip", build=lambda hf: BlipForImageTextRetrieval(blip_config(hf)),
    keymap=lambda hf: VISION + ENCODER + RETRIEVAL_HEADS))
register("BlipForQuestionAnswering")(Family(
    name="blip", build=lambda hf: BlipForQuestionAnswering(blip_config(hf)),
    keymap=lambda hf: VISION + ENCODER + DECODER))
