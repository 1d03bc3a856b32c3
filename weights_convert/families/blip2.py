"""BLIP-2 and InstructBLIP checkpoints (Salesforce/blip2-*, Salesforce/instructblip-*), as stored on disk.

    vision_model.*                     BLIP's ViT (fused qkv, `projection`): blip.VISION as is
    query_tokens                       (1, Q, Dq) -> ours (Q, Dq)
    qformer.layernorm.*                the norm over the queries (BLIP-2)
    qformer.embeddings.*               word / position tables + that norm (InstructBLIP)
    embeddings.*                       word / position tables at the root (Blip2ForImageTextRetrieval)
    qformer.encoder.layer.N.*          BERT's names; crossattention every k-th layer; *_query = the query MLP
    language_projection.*              Q-Former width -> LLM width
    language_model.*                   OPT (model.decoder.*) or LLaMA (model.*), lm_head maybe tied
    vision_projection, text_projection, itm_head   the retrieval heads

The Q-Former layers are BLIP's text layers plus the query MLP, so its map is blip.TEXT's layer rules
with the `crossattention` names shifted by HF's extra `.attention` level, as data.
"""
from minivlm.models.blip import blip_vision_config
from minivlm.models.blip2 import (Blip2Config, Blip2ForConditionalGeneration, InstructBlipForConditionalGeneration)
from minivlm.models.blip2_retrieval import Blip2ForImageTextRetrieval, Blip2Model
from minivlm.text.opt import OPTConfig
from minivlm.text.qformer import QFormerConfig

from ..engine import KeyMap, Rule, squeeze_leading
from ..registry import Family, register
from .blip import VISION
from .clip import vision_fields
from .llama import BODY as LLAMA_BODY
from .llama import llama_config
from .opt import BODY as OPT_BODY
from .opt import opt_config

L, O = "qformer.encoder.layer.{i}.", "qformer.layers.{i}."
QFORMER = KeyMap(rules=[
    Rule(L + "attention.attention.query.{wb}", O + "self_attn.q_proj.{wb}"),
    Rule(L + "attention.attention.key.{wb}", O + "self_attn.k_proj.{wb}"),
    Rule(L + "attention.attention.value.{wb}", O + "self_attn.v_proj.{wb}"),
    Rule(L + "attention.output.dense.{wb}", O + "self_attn.o_proj.{wb}"),
    Rule(L + "attention.output.LayerNorm.{wb}", O + "self_attn_norm.{wb}"),
    Rule(L + "crossattention.attention.query.{wb}", O + "cross_attn.q_proj.{wb}"),
    Rule(L + "crossattention.attention.key.{wb}", O + "cross_attn.k_proj.{wb}"),
    Rule(L + "crossattention.attention.value.{wb}", O + "cross_attn.v_proj.{wb}"),
    Rule(L + "crossattention.output.dense.{wb}", O + "cross_attn.o_proj.{wb}"),
    Rule(L + "crossattention.output.LayerNorm.{wb}", O + "cross_attn_norm.{wb}"),
    Rule(L + "intermediate_query.dense.{wb}", O + "mlp_query.fc1.{wb}"),
    Rule(L + "output_query.dense.{wb}", O + "mlp_query.fc2.{wb}"),
    Rule(L + "output_query.LayerNorm.{wb}", O + "mlp_query_norm.{wb}"),
    Rule(L + "intermediate.dense.{wb}", O + "mlp.fc1.{wb}"),            # the text MLP, where there is text
    Rule(L + "output.dense.{wb}", O + "mlp.fc2.{wb}"),
    Rule(L + "output.LayerNorm.{wb}", O + "mlp_norm.{wb}"),
    Rule("query_tokens", "query_tokens", squeeze_leading(1)),          # (1, Q, Dq) -> (Q, Dq)
    Rule("qformer.layernorm.{wb}", "qformer.embeddings.norm.{wb}"),                      # BLIP-2
    Rule("qformer.embeddings.layernorm.{wb}", "qformer.embeddings.norm.{wb}"),           # InstructBLIP
    Rule("qformer.embeddings.{table}_embeddings.weight", "qformer.embeddings.{table}_embeddings.weight"),
    Rule("embeddings.{table}_embeddings.weight", "qformer.embeddings.{table}_embeddings.weight"),  # retrieval
], skip=["qformer.embeddings.position_ids", "embeddings.position_ids"])  # non-persistent aranges of older files

PROJECTION = KeyMap([Rule("language_projection.{wb}", "language_projection.{wb}")])
RETRIEVAL_HEADS = KeyMap([Rule("{head}_projection.{wb}", "{head}_projection.{wb}"), Rule("itm_head.{wb}", "itm_head.{wb}")])


def vision_config(v):
    """Blip2VisionConfig / InstructBlipVisionConfig dict -> BLIP's tower switches with BLIP-2's defaults."""
    defaults = dict(image_size=224, patch_size=14, hidden_size=1408, num_layers=39, num_heads=16,
                    intermediate_size=6144, hidden_act="gelu", layer_norm_eps=1e-6)
    return blip_vision_config(**{**vision_fields(v, defaults), "num_channels": 3, "qkv_bias": v.get("qkv_bias", True)})


def qformer_config(q, vision_width, text_embeddings):
    return QFormerConfig(
        vocab_size=q.get("vocab_size", 30522), hidden_size=q.get("hidden_size", 768),
        num_layers=q.get("num_hidden_layers", 12), num_heads=q.get("num_attention_heads", 12),
        intermediate_size=q.get("intermediate_size", 3072), hidden_act=q.get("hidden_act", "gelu"),
        max_position_embeddings=q.get("max_position_embeddings", 512), layer_norm_eps=q.get("layer_norm_eps", 1e-12),
        attention_dropout=q.get("attention_probs_dropout_prob", 0.1), hidden_dropout=q.get("hidden_dropout_prob", 0.1),
        pad_token_id=q.get("pad_token_id", 0),
        encoder_hidden_size=vision_width,  # Blip2Config sets it to the vision width, whatever the file says
        cross_attention_frequency=q.get("cross_attention_frequency", 2),
        text_input=text_embeddings or q.get("use_qformer_text_input", False), text_embeddings=text_embeddings)


def text_config(hf):
    """The language model's config: OPT (BLIP-2's default) or LLaMA (Vicuna in InstructBLIP)."""
    text = dict(hf.get("text_config") or {"model_type": "opt"})
    kind = text.get("model_type", "opt")
    if kind == "opt":
        return opt_config(text)
    if kind == "llama":
        return llama_config({**dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                    num_attention_heads=32), **text})
    raise ValueError(f"a BLIP-2 / InstructBLIP language model of type {kind!r} is not supported: minivlm builds the "
                     f"decoder-only OPT and LLaMA ones (Flan-T5, an encoder-decoder, is not implemented)")


def blip2_config(hf, text_embeddings=False, language_model=True):
    vision = vision_config(hf.get("vision_config") or {})
    return Blip2Config(vision_config=vision, qformer_config=qformer_config(hf.get("qformer_config") or {}, vision.hidden_size,
                                                             text_embeddings),
                       text_config=text_config(hf) if language_model else None,
                       num_query_tokens=hf.get("num_query_tokens", 32),
                       image_token_index=hf.get("image_token_index", hf.get("image_token_id")),
                       image_text_hidden_size=hf.get("image_text_hidden_size", 256))


def language_model_keymap(cfg: Blip2Config):
    """language_model.* for OPT (model.decoder.*) or LLaMA (model.*), the head tied where the config says."""
    if cfg.text_config is None:
        return KeyMap([])
    body = (OPT_BODY.prefixed("language_model.model.decoder.", "language_model.model.") if isinstance(cfg.text_config, OPTConfig)
            else LLAMA_BODY.prefixed("language_model.model.", "language_model.model."))
    tied = {"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"} \
        if cfg.text_config.tie_word_embeddings else {}
    return body + KeyMap([Rule("language_model.lm_head.weight", "language_model.lm_head.weight")], tied=tied)


def keymap(cfg: Blip2Config, retrieval=False):
    parts = VISION + QFORMER
    return parts + (RETRIEVAL_HEADS if retrieval else KeyMap([])) + (
        PROJECTION + language_model_keymap(cfg) if cfg.text_config is not None else KeyMap([]))


def _family(model_class, text_embeddings=False, language_model=True, retrieval=False):
    return Family(name="blip2",
                  build=lambda hf: model_class(blip2_config(hf, text_embeddings, language_model)),
                  keymap=lambda hf: keymap(blip2_config(hf, text_embeddings, language_model), retrieval))


register("Blip2ForConditionalGeneration")(_family(Blip2ForConditionalGeneration))
register("InstructBlipForConditionalGeneration")(_family(InstructBlipForConditionalGeneration, text_embeddings=True))
register("Blip2Model")(_family(Blip2Model))
register("Blip2ForImageTextRetrieval")(_family(Blip2ForImageTextRetrieval, text_embeddings=True, language_model=False,
                                               retrieval=True))
