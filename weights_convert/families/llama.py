"""LlamaForCausalLM / LlamaModel checkpoints (meta-llama/*, TinyLlama, ...), as stored on disk.

The decoder's map is exposed in two parts so that LLaVA & co. can reuse it under their prefixes:

    BODY              LlamaModel's tensors, relative (embed_tokens, layers.N.*, norm)
    lm_head_keymap()  the head, declared tied to model.embed_tokens when the config says so
                      (transformers 5 save_pretrained then leaves lm_head.weight out of the file)

    causal_lm_keymap(cfg)                                  # LlamaForCausalLM: model.* + lm_head
    causal_lm_keymap(cfg).prefixed("language_model.", "language_model.")   # llava-hf hub files
    BODY.prefixed("model.language_model.", "language_model.model.")
        + lm_head_keymap(tied).prefixed("", "language_model.")            # a transformers 5 save
"""
from minivlm.text.llama import LlamaForCausalLM, LlamaModel
from minivlm.text.llama_config import LlamaConfig

from ..engine import KeyMap, Rule
from ..registry import Family, register

LAYER = "layers.{i}."
OURS = "layers.{i}."

BODY = KeyMap(
    rules=[
        Rule("embed_tokens.weight", "embed_tokens.weight"),
        Rule(LAYER + "input_layernorm.weight", OURS + "norm1.weight"),
        Rule(LAYER + "self_attn.{p}_proj.{wb}", OURS + "attn.{p}_proj.{wb}"),      # q, k, v, o
        Rule(LAYER + "post_attention_layernorm.weight", OURS + "norm2.weight"),
        Rule(LAYER + "mlp.{p}_proj.{wb}", OURS + "mlp.{p}_proj.{wb}"),             # gate, up, down
        Rule("norm.weight", "norm.weight"),
    ],
    # Older checkpoints saved RoPE's frequencies; we recompute them from the config.
    skip=[LAYER + "self_attn.rotary_emb.inv_freq", "rotary_emb.inv_freq"],
)


def lm_head_keymap(tied):
    return KeyMap([Rule("lm_head.weight", "lm_head.weight")],
                  tied={"lm_head.weight": "model.embed_tokens.weight"} if tied else {})


def causal_lm_keymap(cfg: LlamaConfig):
    return BODY.prefixed("model.", "model.") + lm_head_keymap(cfg.tie_word_embeddings)


def rope_parameters(hf):
    """config.json -> rope_parameters: transformers 5 writes them there; hub files of the transformers 4
    era have rope_theta at the top level and the scaling in rope_scaling (with "type" or "rope_type")."""
    p = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    if "type" in p:
        p.setdefault("rope_type", p.pop("type"))
    p.setdefault("rope_type", "default")
    p.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    if p["rope_type"] == "llama3":  # HF's default for the pre-scaling length
        p.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings", 2048))
    return p


def llama_config(hf):
    """HF's LlamaConfig dict -> ours; a missing field takes HF's default."""
    return LlamaConfig(
        vocab_size=hf.get("vocab_size", 32000), hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"], num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=hf["num_attention_heads"], num_key_value_heads=hf.get("num_key_value_heads"),
        head_dim=hf.get("head_dim"), hidden_act=hf.get("hidden_act", "silu"),
        max_position_embeddings=hf.get("max_position_embeddings", 2048), rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_parameters=rope_parameters(hf), attention_bias=hf.get("attention_bias", False),
        mlp_bias=hf.get("mlp_bias", False), attention_dropout=hf.get("attention_dropout", 0.0),
        tie_word_embeddings=hf.get("tie_word_embeddings", False), bos_token_id=hf.get("bos_token_id", 1),
        eos_token_id=hf.get("eos_token_id", 2), pad_token_id=hf.get("pad_token_id"),
    )


register("LlamaForCausalLM")(Family(
    name="llama",
    build=lambda hf: LlamaForCausalLM(llama_config(hf)),
    keymap=lambda hf: causal_lm_keymap(llama_config(hf)),
))

register("LlamaModel")(Family(
    name="llama",
    build=lambda hf: LlamaModel(llama_config(hf)),
    keymap=lambda hf: BODY,
))
