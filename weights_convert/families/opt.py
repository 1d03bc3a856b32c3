"""OPTForCausalLM checkpoints (facebook/opt-*), as stored on disk.

    decoder.*  or  model.decoder.*      the hub's files / a transformers 5 save (one form per file)
    lm_head.weight                      left out when tied to decoder.embed_tokens (transformers 5)

BODY is the decoder relative to its root, for BLIP-2 to reuse under `language_model.model.decoder.`.
"""
from minivlm.text.opt import OPTConfig, OPTForCausalLM

from ..engine import KeyMap, Rule
from ..registry import Family, register

L, O = "layers.{i}.", "layers.{i}."
BODY = KeyMap(rules=[
    Rule("embed_tokens.weight", "embed_tokens.weight"),
    Rule("embed_positions.weight", "embed_positions.weight"),
    Rule("project_in.weight", "project_in.weight"),
    Rule("project_out.weight", "project_out.weight"),
    Rule(L + "self_attn.out_proj.{wb}", O + "attn.o_proj.{wb}"),
    Rule(L + "self_attn.{p}_proj.{wb}", O + "attn.{p}_proj.{wb}"),      # q, k, v (out_proj matched above)
    Rule(L + "self_attn_layer_norm.{wb}", O + "norm1.{wb}"),
    Rule(L + "fc1.{wb}", O + "mlp.fc1.{wb}"),
    Rule(L + "fc2.{wb}", O + "mlp.fc2.{wb}"),
    Rule(L + "final_layer_norm.{wb}", O + "norm2.{wb}"),
    Rule("final_layer_norm.{wb}", "final_norm.{wb}"),
])


def lm_head_keymap(tied, prefix=""):
    return KeyMap([Rule("lm_head.weight", prefix + "lm_head.weight")],
                  tied={prefix + "lm_head.weight": prefix + "model.embed_tokens.weight"} if tied else {})


def causal_lm_keymap(cfg: OPTConfig):
    return (BODY.prefixed("model.decoder.", "model.") + BODY.prefixed("decoder.", "model.")
            + lm_head_keymap(cfg.tie_word_embeddings))


def opt_config(hf):
    """HF's OPTConfig dict -> ours; a missing field takes HF's default."""
    return OPTConfig(
        vocab_size=hf.get("vocab_size", 50272), hidden_size=hf.get("hidden_size", 768),
        num_hidden_layers=hf.get("num_hidden_layers", 12), ffn_dim=hf.get("ffn_dim", 3072),
        num_attention_heads=hf.get("num_attention_heads", 12),
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        word_embed_proj_dim=hf.get("word_embed_proj_dim"),
        do_layer_norm_before=hf.get("do_layer_norm_before", True),
        remove_final_layer_norm=hf.get("_remove_final_layer_norm", False),
        layer_norm_elementwise_affine=hf.get("layer_norm_elementwise_affine", True),
        enable_bias=hf.get("enable_bias", True), activation_function=hf.get("activation_function", "relu"),
        dropout=hf.get("dropout", 0.1), attention_dropout=hf.get("attention_dropout", 0.0),
        tie_word_embeddings=hf.get("tie_word_embeddings", True), pad_token_id=hf.get("pad_token_id", 1),
        bos_token_id=hf.get("bos_token_id", 2), eos_token_id=hf.get("eos_token_id", 2),
    )


register("OPTForCausalLM")(Family(
    name="opt",
    build=lambda hf: OPTForCausalLM(opt_config(hf)),
    keymap=lambda hf: causal_lm_keymap(opt_config(hf)),
))
