"""Autoregressive generation shared by every generative model (LLaMA, LLaVA, LLaVA-NeXT, BLIP).

    prefill:  model(prompt)                      -> logits of the last position, the KV cache
    decode:   model(one new token, cache)        -> next logits, cache grown by one, repeat

The model is any callable that takes HF's keyword inputs and returns HF's fields:

    model(input_ids=(B, L) | inputs_embeds=(B, L, D), attention_mask=(B, past + L),
          position_ids=(B, L), past_key_values=cache | None, use_cache=True, **model_kwargs)
        -> .logits (B, L, V), .past_key_values

`model_kwargs` (pixel_values, image_sizes ...) go to the prefill only; decode steps send the new
token ids alone, so LLaVA can prefill on image+text embeddings and then decode on ids.
The result is HF's greedy generate tensor: prompt + new tokens (only the new ones when the prompt
came as inputs_embeds), rows that met eos filled with pad_token_id, and the loop stops as soon as
every row has finished.
"""
import torch

from .blocks.kv_cache import StaticKVCache


def prompt_positions(attention_mask):
    """Positions counted over real tokens only, so a left-padded row starts at 0 (HF's generate:
    cumsum - 1, padding filled with 0)."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, L)


def top_k_filter(logits, k):
    """Keep the k largest logits per row (ties with the k-th kept), the rest -> -inf."""
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits, p):
    """Nucleus sampling (Holtzman et al. 2019): keep the most likely tokens until their probability
    mass reaches p; a token goes when the mass strictly above it already reaches p. The top token stays."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V): mass of the tokens ranked above
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_tokens(logits, do_sample=False, temperature=1.0, top_k=None, top_p=None, generator=None):
    """(B, V) float32 logits -> (B,) token ids: argmax, or a draw after temperature / top-k / top-p."""
    if not do_sample:
        return logits.argmax(dim=-1)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def special_token_defaults(model, config, kwargs):
    """eos / pad ids for generate() unless the caller gave them: the checkpoint's
    generation_config.json first (load_pretrained keeps it as model.generation_config), then the
    model config, as transformers resolves them. llava-hf folders, for one, set their pad id there
    only, and it is what finished rows of a batch are filled with."""
    stored = getattr(model, "generation_config", None) or {}
    for name in ("eos_token_id", "pad_token_id"):
        kwargs.setdefault(name, stored.get(name, getattr(config, name, None)))
    return kwargs


def new_token_budget(prompt_length, max_new_tokens=None, max_length=None):
    """How many tokens to make: max_new_tokens, else HF's max_length (the prompt included), else 20."""
    if max_new_tokens is not None:
        return max_new_tokens
    if max_length is not None:
        if max_length <= prompt_length:
            raise ValueError(f"max_length={max_length} leaves no room after a prompt of {prompt_length} tokens")
        return max_length - prompt_length
    return 20


def _check_settings(max_new_tokens, temperature, top_k, top_p):
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def takes_static_cache(model):
    """True for models whose decoder reads a StaticKVCache (a class flag; LLaVA's decoder is language_model)."""
    return getattr(getattr(model, "language_model", model), "static_kv_cache", False)


@torch.no_grad()
def generate(model, input_ids=None, attention_mask=None, inputs_embeds=None, *, max_new_tokens=None,
             max_length=None, do_sample=False, temperature=1.0, top_k=None, top_p=None, eos_token_id=None, pad_token_id=None,
             generator=None, use_cache=True, static_cache=True, **model_kwargs):
    """Greedy (default) or sampled continuation of a (left-padded) batch of prompts.

    max_new_tokens (default 20), or max_length counting the prompt as HF does. eos_token_id: an id
    or a list; a row that produced one is finished and gets pad_token_id (default: the first eos
    id) from then on. generator: a torch.Generator for reproducible sampling.
    use_cache=False re-runs the whole sequence every step (the slow reference the tests compare to).
    static_cache: where the model takes one (LLaMA and the models built on it), the KV cache is
    allocated once for prompt + max_new_tokens positions and written in place (blocks/kv_cache.py);
    False grows it by concatenation each step (the readable form; same numbers).
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("generate needs exactly one of input_ids or inputs_embeds; got "
                         + ("both" if input_ids is not None else "neither"))
    prompt = input_ids if input_ids is not None else inputs_embeds
    max_new_tokens = new_token_budget(prompt.shape[1], max_new_tokens, max_length)
    _check_settings(max_new_tokens, temperature, top_k, top_p)
    batch, length, device = prompt.shape[0], prompt.shape[1], prompt.device
    if not use_cache and input_ids is None:
        raise ValueError("use_cache=False re-feeds the token ids, so it needs input_ids, not inputs_embeds")
    if attention_mask is None:
        attention_mask = torch.ones(batch, length, dtype=torch.long, device=device)
    elif tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask must be ({batch}, {length}) like the prompt, got {tuple(attention_mask.shape)}")

    eos = None
    if eos_token_id is not None:
        eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=device)
        pad_token_id = int(eos[0]) if pad_token_id is None else pad_token_id

    tokens = input_ids if input_ids is not None else torch.empty(batch, 0, dtype=torch.long, device=device)
    # (B, L) counted over real tokens; a model with its own prompt positions (Qwen2-VL's M-RoPE,
    # (3, B, L)) passes position_ids, and each new token then takes the last position + 1.
    position_ids = model_kwargs.pop("position_ids", None)
    if position_ids is None:
        position_ids = prompt_positions(attention_mask)  # (B, L)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    step_inputs = {"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}
    step_inputs.update(model_kwargs)
    llama_like = takes_static_cache(model)
    cache = StaticKVCache(room=max_new_tokens) if use_cache and static_cache and llama_like else None
    if use_cache and llama_like:  # the prefill needs the last position's logits only (as HF's generate)
        step_inputs["logits_to_keep"] = 1
    for _ in range(max_new_tokens):
        out = model(**step_inputs, attention_mask=attention_mask, position_ids=position_ids,
                    past_key_values=cache, use_cache=use_cache)
        logits = out.logits[:, -1].float()  # (B, V): HF also decides in float32
        new = next_tokens(logits, do_sample, temperature, top_k, top_p, generator)  # (B,)
        if eos is not None:
            new = torch.where(unfinished, new, torch.full_like(new, pad_token_id))
        tokens = torch.cat([tokens, new[:, None]], dim=1)
        if eos is not None:
            unfinished &= ~torch.isin(new, eos)
            if not unfinished.any():
                break
        # The new token is a real token at the next position of its row.
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
        next_position = position_ids[..., -1:] + 1  # (B, 1) or (3, B, 1)
        if use_cache:
            cache = out.past_key_values
            step_inputs, position_ids = {"input_ids": new[:, None]}, next_position
        else:
            position_ids = torch.cat([position_ids, next_position], dim=-1)
            step_inputs = {"input_ids": tokens, **model_kwargs}
    return tokens
