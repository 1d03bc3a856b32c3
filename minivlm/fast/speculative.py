"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023), greedy form.

A small draft model guesses the next k tokens one by one (cheap); the target model scores all of
them in ONE forward (k + 1 positions cost about as much as one when decoding is bandwidth-bound).
The target's own greedy choice at each position decides:

    draft:   d1 d2 d3 d4                 target argmax after  last, d1, d2, d3, d4:  t0 t1 t2 t3 t4
    accept d_i while d_i == t_(i-1); at the first mismatch keep t_(i-1) instead and stop;
    if all k match, t_k is a free extra token.

Every kept token is the target's argmax given the tokens before it, so the output is exactly the
target's greedy continuation; the draft only changes how many target forwards it takes.
Both caches then drop the positions of rejected guesses (crop).
"""
import torch

from ..blocks.kv_cache import KVCache


def crop(cache: KVCache, length: int) -> None:
    """Forget cached positions from `length` on (a dynamic KVCache: slice each layer)."""
    for layer in cache.layers:
        if layer.k is not None:
            layer.k, layer.v = layer.k[:, :, :length], layer.v[:, :, :length]


def feed(model: torch.nn.Module, cache: KVCache, ids: torch.Tensor) -> torch.Tensor:  # ids (1, L) after the cached positions -> logits (1, L, V) float32
    return model(input_ids=ids, past_key_values=cache, use_cache=True).logits.float()


@torch.no_grad()
def speculative_generate(target: torch.nn.Module, draft: torch.nn.Module, input_ids: torch.Tensor,
                         max_new_tokens: int = 20, k: int = 4, eos_token_id: int | list[int] | None = None,
                         stats: dict | None = None) -> torch.Tensor:
    """prompt (1, L) -> prompt + up to max_new_tokens tokens: the target's greedy ids.

    target, draft: LLaMA-style causal LMs sharing one vocabulary. stats: a dict that receives
    'target_forwards' and 'accepted' (how many draft tokens were kept), to see what it bought."""
    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"speculative_generate takes one unpadded prompt (1, L), got shape {tuple(input_ids.shape)}")
    if k < 1:
        raise ValueError(f"k (tokens proposed per round) must be >= 1, got {k}")
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    tokens, prompt_len = input_ids, input_ids.shape[1]
    t_cache = KVCache(len(target.model.layers))
    d_cache = KVCache(len(draft.model.layers))
    # The target caches every token but the last: the last one is fed with the guesses.
    if prompt_len > 1:
        feed(target, t_cache, tokens[:, :-1])
    forwards = accepted = 0
    while tokens.shape[1] - prompt_len < max_new_tokens:
        guesses = []
        for _ in range(k):  # the draft catches up on what it has not seen, then guesses one at a time
            seen = len(d_cache)
            guess = feed(draft, d_cache, torch.cat([tokens] + guesses, dim=1)[:, seen:])[:, -1].argmax(-1)
            guesses.append(guess[:, None])
        guesses = torch.cat(guesses, dim=1)  # (1, k)
        checked = feed(target, t_cache, torch.cat([tokens[:, -1:], guesses], dim=1)).argmax(-1)  # (1, k + 1)
        forwards += 1
        n = 0
        while n < k and guesses[0, n] == checked[0, n]:
            n += 1
        accepted += n
        new = torch.cat([guesses[:, :n], checked[:, n:n + 1]], dim=1)  # (1, n + 1): kept guesses + target's own
        for i, t in enumerate(new[0].tolist()):
            if t in eos:
                new = new[:, :i + 1]
                break
        tokens = torch.cat([tokens, new], dim=1)
        crop(t_cache, tokens.shape[1] - 1)
        crop(d_cache, min(len(d_cache), tokens.shape[1] - 1))
        if eos and int(tokens[0, -1]) in eos:
            break
    if stats is not None:
        stats.update(target_forwards=forwards, accepted=accepted)
    return tokens[:, :prompt_len + max_new_tokens]
