"""Qwen2VLForConditionalGeneration and Qwen2_5_VLForConditionalGeneration checkpoints
(Qwen/Qwen2-VL-*, Qwen/Qwen2.5-VL-*), as stored on disk.

    part          hub files (and transformers 5 save_pretrained)   transformers 5 in memory
    vision tower  visual.*                                          model.visual.*
    decoder       model.*                                           model.language_model.*
    head          lm_head.weight                                    lm_head.weight

Ours: visual.* (the VisionTransformer with packed=True), language_model.model.* and
language_model.lm_head.weight (a LlamaForCausalLM). The tower's attention is a fused qkv Linear,
split into our q/k/v; the merger's Sequential indices 0 / 2 are our fc1 / fc2.

config.json: transformers 5 writes text_config / vision_config; hub files of the transformers 4 era
keep the decoder's fields at the top level with rope_scaling {"type": "mrope", "mrope_section": ...}.
"""
from minivlm.models.qwen2_vl import Qwen2VLConfig, Qwen2VLForConditionalGeneration, qwen2_vl_vision_config

from ..engine import KeyMap, Rule, split_in_three
from ..registry import Family, register
from .llama import BODY, qwen2_config, rope_parameters

BLOCK, OURS = "blocks.{i}.", "encoder.layers.{i}."
VISION_TOWER = KeyMap(rules=[
    Rule("patch_embed.proj.weight", "patch_embed.proj.weight"),                      # (D, C, T, p, p) Conv3d
    Rule(BLOCK + "norm{k}.{wb}", OURS + "norm{k}.{wb}"),
    Rule(BLOCK + "attn.qkv.{wb}", (OURS + "attn.q_proj.{wb}", OURS + "attn.k_proj.{wb}",
                                   OURS + "attn.v_proj.{wb}"), split_in_three),    # (3D, D)
    Rule(BLOCK + "attn.proj.{wb}", OURS + "attn.o_proj.{wb}"),
    Rule(BLOCK + "mlp.fc{k}.{wb}", OURS + "mlp.fc{k}.{wb}"),
    Rule(BLOCK + "mlp.{p}_proj.{wb}", OURS + "mlp.{p}_proj.{wb}"),              # Qwen2.5-VL: gate, up, down
    Rule("merger.ln_q.{wb}", "pooler.norm.{wb}"),
    Rule("merger.mlp.0.{wb}", "pooler.mlp.fc1.{wb}"),
    Rule("merger.mlp.2.{wb}", "pooler.mlp.fc2.{wb}"),
])

# HF Qwen2VLTextConfig's defaults (the 72B's sizes); hub files store their own.
TEXT_DEFAULTS = dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                     num_attention_heads=64, num_key_value_heads=8, rms_norm_eps=1e-5, max_position_embeddings=32768,
                     max_window_layers=80, bos_token_id=151643, eos_token_id=151645, rope_theta=1e6)
VISION_DEFAULTS = dict(depth=32, embed_dim=1280, hidden_size=3584, hidden_act="quick_gelu", mlp_ratio=4, num_heads=16,
                       in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)


def text_fields(hf):
    """The decoder's config dict, from text_config (transformers 5) or the top level (hub files)."""
    text = dict(hf.get("text_config") or {k: v for k, v in hf.items() if k not in ("vision_config", "architectures")})
    text = {**TEXT_DEFAULTS, **text}
    rope = rope_parameters(text)
    if rope["rope_type"] == "mrope":  # the hub's spelling; HF reads it as default RoPE + mrope_section
        rope["rope_type"] = "default"
    rope.setdefault("mrope_section", [16, 24, 24])  # HF Qwen2VLRotaryEmbedding's fallback
    text["rope_parameters"] = rope
    text["head_dim"] = None  # Qwen2VLAttention uses hidden_size // num_heads whatever head_dim says
    text["tie_word_embeddings"] = bool(hf.get("tie_word_embeddings") or text.get("tie_word_embeddings"))
    return text


# HF Qwen2_5_VLVisionConfig's defaults: hidden_size is the tower's width there, out_hidden_size the LM's.
VISION_2_5_DEFAULTS = dict(depth=32, hidden_size=3584, hidden_act="silu", intermediate_size=3420, num_heads=16,
                           in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           tokens_per_second=4, window_size=112, out_hidden_size=3584,
                           fullatt_block_indexes=[7, 15, 23, 31])


def vision_fields(hf, version="2"):
    """The tower's VisionConfig. Qwen2-VL names the width embed_dim (hidden_size is the merger's output)
    and gives an mlp_ratio; Qwen2.5-VL names it hidden_size (out_hidden_size the merger's output), gives
    intermediate_size, and adds RMSNorm, SwiGLU and windows (the switches of VisionConfig)."""
    v = {**(VISION_DEFAULTS if version == "2" else VISION_2_5_DEFAULTS), **(hf.get("vision_config") or {})}
    if version == "2":
        width, out, mlp, switches = v["embed_dim"], v["hidden_size"], int(v["embed_dim"] * v["mlp_ratio"]), {}
    else:
        width, out, mlp = v["hidden_size"], v["out_hidden_size"], v["intermediate_size"]
        switches = dict(norm="rms", gated_mlp=True, window_size=v["window_size"],
                        full_attention_layers=tuple(v["fullatt_block_indexes"]))
    return qwen2_vl_vision_config(
        image_size=v["patch_size"], patch_size=v["patch_size"], num_channels=v["in_channels"], hidden_size=width,
        num_layers=v["depth"], num_heads=v["num_heads"], intermediate_size=mlp, hidden_act=v["hidden_act"],
        temporal_patch_size=v["temporal_patch_size"], spatial_merge_size=v["spatial_merge_size"], merger_size=out,
        rope_theta=(v.get("rope_parameters") or {}).get("rope_theta", 10000.0), **switches)


def qwen2_vl_config(hf):
    if hf.get("model_type") == "qwen2_5_vl" or "Qwen2_5_VLForConditionalGeneration" in (hf.get("architectures") or []):
        v = {**VISION_2_5_DEFAULTS, **(hf.get("vision_config") or {})}
        vision, tokens_per_second = vision_fields(hf, "2.5"), v["tokens_per_second"]
    else:
        vision, tokens_per_second = vision_fields(hf), None
    return Qwen2VLConfig(
        vision_config=vision, text_config=qwen2_config(text_fields(hf)), tokens_per_second=tokens_per_second,
        image_token_id=hf.get("image_token_id", 151655), video_token_id=hf.get("video_token_id", 151656),
        vision_start_token_id=hf.get("vision_start_token_id", 151652),
        vision_end_token_id=hf.get("vision_end_token_id", 151653))


def qwen2_vl_keymap(hf):
    keymap = (VISION_TOWER.prefixed("visual.", "visual.") + VISION_TOWER.prefixed("model.visual.", "visual.")
              + BODY.prefixed("model.", "language_model.model.")
              + BODY.prefixed("model.language_model.", "language_model.model.")
              + KeyMap([Rule("lm_head.weight", "language_model.lm_head.weight")]))
    if qwen2_vl_config(hf).text_config.tie_word_embeddings:  # transformers 5 leaves the tied head out
        keymap = keymap + KeyMap([], tied={"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"})
    return keymap


register("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")(Family(
    name="qwen2_vl",
    build=lambda hf: Qwen2VLForConditionalGeneration(qwen2_vl_config(hf)),
    keymap=qwen2_vl_keymap,
))
