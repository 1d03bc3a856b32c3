"""Autoregressive generation shared by every generative model (LLaMA, LLaVA, LLaVA-NeXT, BLIP-2, Qwen2-VL).

    prefill:  model(prompt)                      -> logits of the last position, the KV cache
    decode:   model(one new token, cache)        -> next logits, cache grown by one, repeat

The model is any callable that takes HF's keyword inputs and returns HF's fields:

    model(input_ids=(B, L) | inputs_embeds=(B, L, D), attention_mask=(B, past + L),
          position_ids=(B, L), past_key_values=cache | None, use_cache=True, **model_kwargs)
        -> .logits (B, L, V), .past_key_values

`model_kwargs` (pixel_values, image_sizes ...) go to the prefill only; decode steps send the new
token ids alone, so LLaVA can prefill on image+text embeddings and then decode on ids.
The result is HF's generate tensor: prompt + new tokens (only the new ones when the prompt came as
inputs_embeds), rows that met eos filled with pad_token_id, and the loop stops as soon as every row
has finished.

Picking a token: the scores go through the logits processors (logits_processors.py, HF's order),
then argmax (greedy), a draw (do_sample), or beam search (num_beams > 1, beam_search.py).

Host syncs. Inside the loop the host waits for the device only where stopping needs an answer:
once per step `unfinished.any()` when eos ids or stop strings are set (to leave the loop as soon as
every row is done, as HF does; without it a batch that finished at step 3 would run to
max_new_tokens), once per beam step (beam search's own stop test), the decode of the last tokens
when stop_strings are set, and the copy to the host a streamer asks for. The prompt is checked once
per call, before the loop.
"""
import torch

from .beam_search import beam_search
from .blocks.kv_cache import StaticKVCache
from .blocks.token_ids import check_one_input
from .logits_processors import ScoreSettings, process_scores, top_k_filter, top_p_filter  # noqa: F401 (re-exported)
from .stop_strings import StopStrings


def prompt_positions(attention_mask):
    """Positions counted over real tokens only, so a left-padded row starts at 0 (HF's generate:
    cumsum - 1, padding filled with 0)."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # (B, L)


def next_tokens(logits, do_sample=False, temperature=1.0, top_k=None, top_p=None, generator=None):
    """(B, V) float32 logits -> (B,) token ids: argmax, or a draw after temperature / top-k / top-p."""
    settings = ScoreSettings(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p)
    return pick(process_scores(logits, None, 0, settings), do_sample, generator)


def pick(scores, do_sample=False, generator=None):
    """(B, V) processed scores -> (B,) ids: the argmax, or a draw from their softmax."""
    if not do_sample:
        return scores.argmax(dim=-1)
    return torch.multinomial(scores.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)


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


def takes_static_cache(model):
    """True for models whose decoder reads a StaticKVCache (a class flag; LLaVA's decoder is language_model)."""
    return getattr(getattr(model, "language_model", model), "static_kv_cache", False)


class Stepper:
    """Runs the model one position at a time and keeps what the next call needs: the cache, the
    attention mask and the positions (each new token is a real token at its row's last position + 1).

    use_cache=False re-feeds the whole sequence (with the prefill's model_kwargs) every step: the
    slow reference the tests compare the cached path to."""

    def __init__(self, model, prompt_inputs, attention_mask, position_ids, cache, use_cache, model_kwargs):
        self.model, self.inputs, self.use_cache = model, prompt_inputs, use_cache
        self.mask, self.positions, self.cache, self.model_kwargs = attention_mask, position_ids, cache, model_kwargs

    def run(self):
        out = self.model(**self.inputs, attention_mask=self.mask, position_ids=self.positions,
                         past_key_values=self.cache, use_cache=self.use_cache)
        if self.use_cache:
            self.cache = out.past_key_values
        return out.logits[:, -1].float()  # (R, V): HF also decides in float32

    def prefill(self) -> torch.Tensor:
        return self.run()

    def step(self, new: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """new (R,) ids just picked, tokens (R, T) everything so far -> (R, V) next logits."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        next_position = self.positions[..., -1:] + 1  # (R, 1), or (3, R, 1) for M-RoPE
        if self.use_cache:
            self.inputs, self.positions = {"input_ids": new[:, None]}, next_position
        else:
            self.positions = torch.cat([self.positions, next_position], dim=-1)
            self.inputs = {"input_ids": tokens, **self.model_kwargs}
        return self.run()

    def beam_step(self, new: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Beam search's decode: cache row rows[i] becomes row i (the beam it extends), then one step.
        The mask and positions need no reordering: every beam of a prompt shares them."""
        self.cache.reorder(rows)
        return self.step(new, None)

    def expand(self, k: int):
        """After the prefill: each prompt's cache, mask and positions copied for its k beams
        (row b becomes rows b*k ... b*k + k-1). The prefill ran once per prompt, not once per beam."""
        rows = torch.arange(self.mask.shape[0], device=self.mask.device).repeat_interleave(k)
        self.cache.reorder(rows)
        self.mask = self.mask[rows]
        self.positions = self.positions.index_select(self.positions.dim() - 2, rows)


def check_prompt(input_ids, attention_mask, prompt):
    """Once per call (one host sync): the prompt's shapes, dtypes and mask values."""
    batch, length = prompt.shape[:2]
    if input_ids is not None and input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must hold integer token ids (int64), got {input_ids.dtype}")
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.long, device=prompt.device)
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask must be ({batch}, {length}) like the prompt, got {tuple(attention_mask.shape)}")
    if length and not bool(((attention_mask == 0) | (attention_mask == 1)).all() & (attention_mask != 0).any(-1).all()):
        raise ValueError("attention_mask must hold 0 (padding) or 1 (token) with at least one token per row, got "
                         f"{attention_mask.tolist() if attention_mask.numel() <= 64 else 'other values'}")
    return attention_mask


def check_beam_settings(num_beams, num_return_sequences, do_sample, streamer, use_cache, early_stopping,
                        length_penalty):
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1 (1: no beam search), got {num_beams!r}")
    if not isinstance(num_return_sequences, int) or not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"num_return_sequences must be an integer in [1, num_beams={num_beams}] "
                         f"(more than one reply per prompt comes from beam search), got {num_return_sequences!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never' (HF's values), got {early_stopping!r}")
    if not isinstance(length_penalty, (int, float)):
        raise ValueError(f"length_penalty must be a number, got {length_penalty!r}")
    if num_beams == 1:
        return
    if do_sample:
        raise ValueError("do_sample=True with num_beams > 1 (beam sampling) is not supported: "
                         "use num_beams=1 to sample, or do_sample=False for beam search")
    if streamer is not None:
        raise ValueError("a streamer needs one reply growing token by token; beam search (num_beams > 1) "
                         "only knows its replies at the end (HF refuses this too)")
    if not use_cache:
        raise ValueError("beam search reorders the KV cache by beam: it needs use_cache=True")


@torch.no_grad()
def generate(model, input_ids=None, attention_mask=None, inputs_embeds=None, *, max_new_tokens=None,
             max_length=None, min_new_tokens=None, min_length=None, do_sample=False, temperature=1.0, top_k=None,
             top_p=None, num_beams=1, length_penalty=1.0, early_stopping=False, num_return_sequences=1,
             repetition_penalty=None, no_repeat_ngram_size=None, stop_strings=None, tokenizer=None, streamer=None,
             eos_token_id=None, pad_token_id=None, generator=None, use_cache=True, static_cache=True, **model_kwargs):
    """Greedy (default), sampled, or beam-searched continuation of a (left-padded) batch of prompts,
    with HF's generate options (docs/generation.md).

    Length: max_new_tokens (default 20), or max_length counting the prompt as HF does; likewise
    min_new_tokens, or min_length counting the prompt (eos is forbidden until then).
    Picking: do_sample with temperature / top_k / top_p and a torch.Generator `generator` for
    reproducible draws; num_beams > 1 with length_penalty, early_stopping (True, False, "never") and
    num_return_sequences (the best replies, best first).
    Shaping: repetition_penalty (> 1 discourages ids already in the row, prompt included),
    no_repeat_ngram_size (no n-gram twice).
    Stopping: eos_token_id (an id or a list; a finished row gets pad_token_id, default the first eos
    id, from then on) and stop_strings (needs `tokenizer`, anything with .decode(ids)).
    streamer: an object with put(ids) / end() (streamer.py's TextStreamer prints the text as it comes).
    use_cache=False re-runs the whole sequence every step (the slow reference the tests compare to).
    static_cache: where the model takes one (LLaMA and the models built on it), the KV cache is
    allocated once for prompt + max_new_tokens positions and written in place (blocks/kv_cache.py);
    False grows it by concatenation each step (the readable form; same numbers).
    """
    check_one_input(input_ids, inputs_embeds, "generate")
    if not use_cache and input_ids is None:
        raise ValueError("use_cache=False re-feeds the token ids, so it needs input_ids, not inputs_embeds")
    prompt = input_ids if input_ids is not None else inputs_embeds
    batch, length, device = prompt.shape[0], prompt.shape[1], prompt.device
    max_new_tokens = new_token_budget(length, max_new_tokens, max_length)
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    check_beam_settings(num_beams, num_return_sequences, do_sample, streamer, use_cache, early_stopping,
                        length_penalty)
    attention_mask = check_prompt(input_ids, attention_mask, prompt)

    eos_ids = None if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    eos = None if eos_ids is None else torch.tensor(eos_ids, device=device)
    if eos_ids is not None and pad_token_id is None:
        pad_token_id = eos_ids[0]
    # HF: min_length counts the prompt (the ids it was given; none when the prompt came as embeddings)
    min_new = min_new_tokens if min_new_tokens is not None else max((min_length or 0) - length, 0)
    settings = ScoreSettings(repetition_penalty, no_repeat_ngram_size, min_new, eos, do_sample, temperature, top_k, top_p)
    settings.check()
    stop = StopStrings(stop_strings, tokenizer) if stop_strings is not None else None

    tokens = input_ids if input_ids is not None else torch.empty(batch, 0, dtype=torch.long, device=device)
    if max_new_tokens == 0:
        return tokens
    # (B, L) counted over real tokens; a model with its own prompt positions (Qwen2-VL's M-RoPE,
    # (3, B, L)) passes position_ids, and each new token then takes the last position + 1.
    position_ids = model_kwargs.pop("position_ids", None)
    if position_ids is None:
        position_ids = prompt_positions(attention_mask)  # (B, L)
    prompt_inputs = {"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}
    prompt_inputs.update(model_kwargs)
    llama_like = takes_static_cache(model)
    cache = StaticKVCache(room=max_new_tokens) if use_cache and static_cache and llama_like else None
    if use_cache and llama_like:  # the prefill needs the last position's logits only (as HF's generate)
        prompt_inputs["logits_to_keep"] = 1
    stepper = Stepper(model, prompt_inputs, attention_mask, position_ids, cache, use_cache, model_kwargs)

    if num_beams > 1:
        logits = stepper.prefill()
        stepper.expand(num_beams)
        # HF fills a beam's unused tail with pad, or eos[0] where pad is 0 (`pad or eos[0]`), -1 without eos
        fill = -1 if eos_ids is None else (pad_token_id or eos_ids[0])
        return beam_search(stepper.beam_step, logits, tokens, num_beams=num_beams, max_new_tokens=max_new_tokens,
                           settings=settings, eos=eos, fill=fill, length_penalty=length_penalty,
                           early_stopping=early_stopping, num_return_sequences=num_return_sequences, stop=stop)

    if streamer is not None:
        streamer.put(tokens.cpu())
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    logits = stepper.prefill()
    for step in range(max_new_tokens):
        new = pick(process_scores(logits, tokens, step, settings), do_sample, generator)  # (B,)
        if eos is not None:  # HF pads finished rows only when eos is set (stop strings alone do not)
            new = torch.where(unfinished, new, torch.full_like(new, pad_token_id))
        tokens = torch.cat([tokens, new[:, None]], dim=1)
        if streamer is not None:
            streamer.put(new.cpu())
        if eos is not None:
            unfinished &= ~torch.isin(new, eos)
        if stop is not None:
            unfinished &= ~stop(tokens)
        if (eos is not None or stop is not None) and not unfinished.any():  # the step's one host sync
            break
        if step + 1 < max_new_tokens:
            logits = stepper.step(new, tokens)
    if streamer is not None:
        streamer.end()
    return tokens
