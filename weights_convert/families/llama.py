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


def llama_config(hf, **switches):
    """HF's LlamaConfig dict -> ours; a missing field takes HF's default. `switches` are the fields a
    LLaMA-family sibling sets itself (mistral_config, qwen2_config)."""
    fields = dict(
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
    return LlamaConfig(**{**fields, **switches})


# HF's class defaults (transformers 5.23) for the fields a file may leave out: llava-hf's
# llava-v1.6-mistral text_config, for one, stores neither hidden_size nor the layer count.
MISTRAL_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096 * 32)
QWEN2_DEFAULTS = dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=32768,
                      bos_token_id=None, eos_token_id=None)


def mistral_config(hf):
    """HF's MistralConfig dict -> ours: LLaMA + a sliding window on every layer (HF's default 4096;
    null turns it off, as mistral-7b-v0.2 files do). MistralConfig has no bias switches, and its
    model ignores layer_types (it only warns), so both are left out here too."""
    hf = {**MISTRAL_DEFAULTS, **hf}
    return llama_config(hf, sliding_window=hf.get("sliding_window", 4096), layer_types=None,
                        attention_bias=False, mlp_bias=False)


def qwen2_config(hf):
    """HF's Qwen2Config dict -> ours: LLaMA + bias on q/k/v only, and an optional sliding window.

    Qwen2Config keeps sliding_window only when use_sliding_window is true, and then (unless
    layer_types is stored, as transformers 5 saves it) slides on layers i >= max_window_layers.
    layer_types naming sliding layers without a window is refused by LlamaConfig, by name."""
    hf = {**QWEN2_DEFAULTS, **hf}
    window = hf.get("sliding_window", 4096) if hf.get("use_sliding_window", False) else None
    layers = hf.get("layer_types")
    if layers is None:
        first = hf.get("max_window_layers", 28)
        layers = ["sliding_attention" if window is not None and i >= first else "full_attention"
                  for i in range(hf["num_hidden_layers"])]
    return llama_config(hf, qkv_bias=True, sliding_window=window, layer_types=layers, attention_bias=False,
                        mlp_bias=False)


# text_config.model_type -> its translation: the LLaMA-family decoders minivlm builds with one class.
DECODERS = {"llama": llama_config, "mistral": mistral_config, "qwen2": qwen2_config}


def decoder_config(hf, default="llama"):
    """A LLaMA-family config dict (model_type llama / mistral / qwen2) -> LlamaConfig; another
    decoder is refused by name."""
    kind = hf.get("model_type") or default
    if kind not in DECODERS:
        raise ValueError(f"a {kind!r} language model is not supported; minivlm's LLaMA decoder implements "
                         f"text_config.model_type {sorted(DECODERS)}")
    return DECODERS[kind](hf)


for _arch, _kind in [("LlamaForCausalLM", "llama"), ("MistralForCausalLM", "mistral"),
                     ("Qwen2ForCausalLM", "qwen2")]:
    register(_arch)(Family(
        name=_kind,
        build=lambda hf, kind=_kind: LlamaForCausalLM(DECODERS[kind](hf)),
        keymap=lambda hf, kind=_kind: causal_lm_keymap(DECODERS[kind](hf)),
    ))

register("LlamaModel")(Family(
    name="llama",
    build=lambda hf: LlamaModel(llama_config(hf)),
    keymap=lambda hf: BODY,
))
