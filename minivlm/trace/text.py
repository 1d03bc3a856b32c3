"""Follow one prompt through a decoder-only language model: LLaMA, Mistral, Qwen2, OPT.

    prompt -> prompt tokens -> token embeddings -> decoder layer 1 .. n -> final norm -> logits
      -> generated tokens

Ours and transformers' run the same parts: the embedding table, then the whole decoder with a hook
on every layer (capture.outputs_of), the final norm's output, the LM head, greedy generate. The
default is a seeded tiny model per family, speaking the character tokenizer: Mistral's sliding window
(8) is shorter than the prompt, so the trace crosses it; Qwen2's q/k/v carry biases; OPT learns its
positions and normalises before each sublayer.
"""
import torch

from ..errors import UsageError
from ..processing.tiny_tokenizer import added_token_ids, write_tiny_tokenizer
from .capture import outputs_of
from .families import Sample
from .inputs import hf_tokenizer, tokenize
from .stage import Stage, first_stop, shape, token_view

TITLE = {"llama": "LLaMA", "mistral": "Mistral", "qwen2": "Qwen2", "opt": "OPT"}
SHIPPED = {}
DEFAULT_PROMPT = "Once upon a time, a small model"
ARCHITECTURE = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                "opt": "OPTForCausalLM"}


def tiny_config(vocab_size, variant="llama") -> dict:
    pad = added_token_ids()["<pad>"]
    common = {"architectures": [ARCHITECTURE[variant]], "model_type": variant, "vocab_size": vocab_size,
              "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": pad, "max_position_embeddings": 256, "initializer_range": 0.1}
    if variant == "opt":
        return {**common, "ffn_dim": 128, "word_embed_proj_dim": 64, "do_layer_norm_before": True,
                "init_std": 0.1}
    config = {**common, "intermediate_size": 128, "num_key_value_heads": 2, "rms_norm_eps": 1e-5}
    if variant == "mistral":
        config["sliding_window"] = 8
    return config


def write_tiny(folder, variant="llama") -> dict:
    return tiny_config(write_tiny_tokenizer(folder), variant)


def sample(variant, image=None, prompt=None, shipped=False) -> Sample:
    if image is not None:
        raise UsageError(f"--image given, but {TITLE[variant]} is a text-only model: drop --image")
    return Sample(None, None, prompt or DEFAULT_PROMPT)


def decoder_of(model):
    """The module holding embed_tokens and layers: ours is model.model for every family; HF's OPT
    nests it one deeper (model.model.decoder)."""
    body = model.model
    return getattr(body, "decoder", body)


@torch.no_grad()
def run_parts(model, ids, max_new_tokens):
    """{stage name: tensor} of any causal LM with HF's layout (ours or transformers')."""
    body = decoder_of(model)
    out = {"prompt tokens": ids, "token embeddings": body.embed_tokens(ids)}
    with outputs_of(body.layers) as layers:
        last = model.model(input_ids=ids).last_hidden_state
    out.update({f"decoder layer {i}": h for i, h in enumerate(layers, 1)})
    out["final norm"] = last
    out["logits"] = model.lm_head(last)
    out["generated tokens"] = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                             max_new_tokens=max_new_tokens, do_sample=False)[0, ids.shape[1]:]
    return out


def trace(loaded, sample, max_new_tokens=8):
    import weights_convert
    tokenizer = weights_convert.load_tokenizer(loaded.folder)
    model, cfg = loaded.ours, loaded.ours.config
    ids = tokenize(tokenizer, [sample.prompt])["input_ids"].to(next(model.parameters()).device)
    parts = run_parts(model, ids, max_new_tokens)
    n = len([k for k in parts if k.startswith("decoder layer")])
    window = getattr(cfg, "sliding_window", None)
    notes = {"prompt tokens": token_view(ids[0], tokenizer),
             "token embeddings": "embed_tokens[ids]" + (" (+ learned positions inside the decoder)"
                                                        if loaded.variant == "opt" else ""),
             "final norm": "after the last layer's residual: the final norm",
             "logits": "lm_head: hidden -> vocabulary"}
    stages = []
    for name, value in parts.items():
        note = notes.get(name, "")
        if name.startswith("decoder layer"):
            note = f"causal attention{f', window {window}' if window else ''} + MLP, residuals" if name.endswith(" 1") else ""
        if name == "logits":
            top = tokenizer.convert_ids_to_tokens(value[0, -1].topk(10).indices.tolist())
            stages.append(Stage(name, value, shape(value), f"next token {top[0]!r}", extra={"top_tokens": top}))
        elif name == "generated tokens":
            text = tokenizer.decode(first_stop(value.tolist(), cfg.eos_token_id))
            stages.append(Stage(name, value, f"{len(value)} new", repr(text), ids=True))
        else:
            stages.append(Stage(name, value, shape(value), note, ids=name == "prompt tokens"))
    stages[0].note = f"{n} layers; " + stages[0].note
    return stages


def reference(loaded, sample, max_new_tokens=8, stages=None):
    tokenizer = hf_tokenizer(loaded.folder)
    ids = tokenize(tokenizer, [sample.prompt])["input_ids"].to(loaded.reference.device)
    return run_parts(loaded.reference, ids, max_new_tokens)
