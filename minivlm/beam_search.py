"""Beam search: keep the `num_beams` best partial replies per prompt instead of one (HF's generate
with num_beams > 1; its vectorised _beam_search, reproduced decision for decision).

Per step, for each prompt (B of them), with K = num_beams running beams:

    scores   = log_softmax(logits) -> logits processors       (B, K, V)   log-probs, HF's order
    total    = running_score[:, :, None] + scores             (B, K*V)    every beam x every token
    top      = the best 2K (more with several eos ids)        (B, 2K)     candidates
    finished = candidates whose new token is eos / a stop string / the last allowed token
    running  <- the best K candidates that did not finish
    done     <- the best K among (done so far, the top-K candidates that just finished), each scored
                sum of log-probs / new_length ** length_penalty  (Wu et al. 2016's normalisation, HF's form)

and the KV cache rows are reordered so row b*K + k holds the history of running beam k of prompt b.
It stops when every candidate hit a stop (max length), when early_stopping=True and K replies are
done, or when no running beam can still beat the worst done reply (HF's heuristic, below).
Two quirks of HF kept for equal ids: finished-but-not-top-K candidates are dropped, and the
heuristic's best possible score uses the current length unless early_stopping="never".
"""
import torch

from .logits_processors import ScoreSettings, process_scores

NEG = -1.0e9  # HF's "cannot be chosen" score (added, not -inf, so sums stay finite)


def gather_beams(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, ...) , index (B, M) -> x[b, index[b, m], ...] (B, M, ...)."""
    while index.dim() < x.dim():
        index = index.unsqueeze(-1)
    return x.take_along_dim(index, dim=1)


@torch.no_grad()
def beam_search(decode, first_logits: torch.Tensor, prompt: torch.Tensor, *, num_beams: int, max_new_tokens: int,
                settings: ScoreSettings, eos: torch.Tensor | None, fill: int, length_penalty: float = 1.0,
                early_stopping: bool | str = False, num_return_sequences: int = 1, stop=None) -> torch.Tensor:
    """first_logits (B, V): the prefill's last position for each prompt; prompt (B, L) ids (L may be 0).
    decode(ids (B*K,), rows (B*K,)) -> (B*K, V) logits of the next position, after putting cache row
    rows[i] at row i. stop: optional (R, T) ids -> (R,) bool (stop strings).
    Returns (B * num_return_sequences, L + longest reply): the best replies, best first, `fill` after
    a reply's end."""
    batch, length = prompt.shape
    k, vocab, device = num_beams, first_logits.shape[-1], first_logits.device
    keep = max(2, 1 + (0 if eos is None else eos.numel())) * k  # enough that K can continue after eos
    in_top_k = torch.arange(keep, device=device) < k            # only these may become done replies

    running = prompt.new_full((batch, k, length + max_new_tokens), fill)
    running[:, :, :length] = prompt[:, None]
    running_scores = torch.zeros(batch, k, device=device)
    running_scores[:, 1:] = NEG  # all K beams start equal: only beam 0 may spread at the first step
    done = running.clone()
    done_scores = torch.full((batch, k), NEG, device=device)
    done_lengths = torch.zeros(batch, k, dtype=torch.long, device=device)  # new tokens in each done reply
    is_done = torch.zeros(batch, k, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
    rows_offset = torch.arange(batch, device=device)[:, None] * k  # (B, 1) beam k of prompt b is row b*K + k

    logits = first_logits.repeat_interleave(k, dim=0)  # (B*K, V): the K copies of each prompt
    for step in range(max_new_tokens):
        now = length + step
        ids = running[:, :, :now].reshape(batch * k, now)
        scores = process_scores(logits.float().log_softmax(-1), ids, step, settings)  # (B*K, V)
        total = (scores.view(batch, k, vocab) + running_scores[:, :, None]).view(batch, k * vocab)
        top_scores, top_index = total.topk(keep, dim=-1)               # (B, 2K)
        source = top_index // vocab                                      # which beam each extends
        candidates = gather_beams(running, source)                       # (B, 2K, L + T)
        candidates[:, :, now] = top_index % vocab
        finished = torch.full_like(top_scores, step + 1 == max_new_tokens, dtype=torch.bool)
        if eos is not None:
            finished |= torch.isin(candidates[:, :, now], eos)
        if stop is not None:
            finished |= stop(candidates[:, :, :now + 1].reshape(batch * keep, now + 1)).view(batch, keep)

        # the K best candidates that go on
        going_on = top_scores + finished.float() * NEG
        best = going_on.topk(k, dim=-1).indices
        running, running_scores = gather_beams(candidates, best), gather_beams(going_on, best)
        parents = gather_beams(source, best)

        # the done replies: the K best of those so far and the top-K candidates that just finished
        just_done = finished & in_top_k
        final = top_scores / ((step + 1) ** length_penalty)
        final += (is_done.all(-1, keepdim=True) & (early_stopping is True)).float() * NEG
        final += (~improvable).float() * NEG
        final += (~just_done).float() * NEG
        merged = torch.cat([done_scores, final], dim=1).topk(k, dim=-1).indices
        done = gather_beams(torch.cat([done, candidates], dim=1), merged)
        done_scores = gather_beams(torch.cat([done_scores, final], dim=1), merged)
        done_lengths = gather_beams(torch.cat([done_lengths, torch.full_like(final, step + 1, dtype=torch.long)], 1),
                                    merged)
        is_done = gather_beams(torch.cat([is_done, just_done], dim=1), merged)

        improvable = can_improve(improvable, running_scores, done_scores, is_done, step + 1, max_new_tokens,
                                 early_stopping, length_penalty)
        # The one host sync of a beam step: whether to go on at all (HF's loop condition).
        if not bool(improvable.any() & ~(is_done.all() & (early_stopping is True)) & ~finished.all()):
            break
        logits = decode(running[:, :, now].reshape(-1), (parents + rows_offset).reshape(-1))

    replies = done[:, :num_return_sequences].reshape(batch * num_return_sequences, -1)
    longest = int(done_lengths[:, :num_return_sequences].max())
    return replies[:, :length + longest]


def can_improve(improvable, running_scores, done_scores, is_done, new_length, max_new_tokens, early_stopping,
                length_penalty):
    """HF's early-stop heuristic: may the best running beam still beat the worst done reply? Its
    best possible score is its score at the current length (or at max length when
    early_stopping="never" and a positive length_penalty favours longer replies)."""
    if early_stopping == "never" and length_penalty > 0.0:
        new_length = max_new_tokens
    best_possible = running_scores[:, :1] / (new_length ** length_penalty)
    worst_done = torch.where(is_done, done_scores.min(dim=1, keepdim=True).values, NEG)
    return improvable & (best_possible > worst_done).any(dim=-1, keepdim=True)
