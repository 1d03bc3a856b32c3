"""How the next-token scores are shaped before a token is picked, one small function per option.

`process_scores` applies them in the order transformers' generate builds its processor list
(GenerationMixin._get_logits_processor), which matters where two options touch the same token:

    repetition_penalty  -> no_repeat_ngram_size -> min_length / min_new_tokens      (every strategy)
    temperature -> top_k -> top_p                                                    (sampling only)

Each takes scores (R, V) float32 and the ids so far (R, T) (the prompt ids included, as HF's
`input_ids`) and returns new scores; none syncs with the host. Greedy and sampling pass raw logits;
beam search passes log-softmax scores (as HF does), so a repetition penalty there multiplies
log-probabilities, which are all negative.
"""
from dataclasses import dataclass

import torch


def repetition_penalty(scores: torch.Tensor, ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019, eq. 4 as HF applies it): every token already in the row's
    ids gets score / penalty where the score is positive, score * penalty where negative."""
    vocab = scores.shape[-1]
    seen = scores.new_zeros(scores.shape[0], vocab + 1, dtype=torch.bool)  # a spare column for
    seen.scatter_(1, ids.clamp(max=vocab), True)                              # ids past the lm head
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen[:, :vocab], penalised, scores)


def no_repeat_ngram(scores: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would complete an n-gram the row already holds (Paulus et al. 2017):
    the row's last n-1 ids are compared with every earlier window of n-1; a match bans the token
    that followed it there."""
    length = ids.shape[1]
    if length < n:
        return scores
    vocab = scores.shape[-1]
    suffix = ids[:, length - n + 1:]                     # (R, n-1) what the next token would extend
    windows = ids.unfold(1, n, 1)                        # (R, length - n + 1, n) every n-gram so far
    match = (windows[..., :-1] == suffix[:, None]).all(-1)  # (R, W)
    banned = scores.new_zeros(scores.shape[0], vocab + 1, dtype=torch.bool)
    banned.scatter_(1, torch.where(match, windows[..., -1].clamp(max=vocab), vocab), True)
    return scores.masked_fill(banned[:, :vocab], float("-inf"))


def forbid_eos(scores: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """min_length / min_new_tokens: eos cannot be picked while the row is still too short."""
    return scores.index_fill(-1, eos, float("-inf"))


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (ties with the k-th kept), the rest -> -inf."""
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2019): keep the most likely tokens until their probability
    mass reaches p; a token goes when the mass strictly above it already reaches p. The top token stays."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V): mass of the tokens ranked above
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


@dataclass
class ScoreSettings:
    """The options that reshape scores; None / 1.0 / 0 leave a step out, as in HF."""
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    min_new_tokens: int = 0          # min_length is turned into this by `generate` (prompt subtracted)
    eos: torch.Tensor | None = None  # (E,) ids that min_new_tokens holds back
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def check(self):
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0: no penalty), got {self.repetition_penalty!r}")
        if self.no_repeat_ngram_size is not None and (not isinstance(self.no_repeat_ngram_size, int)
                                                      or self.no_repeat_ngram_size < 0):
            raise ValueError(f"no_repeat_ngram_size must be an integer >= 0, got {self.no_repeat_ngram_size!r}")
        if not isinstance(self.min_new_tokens, int) or self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens / min_length must be integers >= 0, got {self.min_new_tokens!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1 or None, got {self.top_k!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p!r}")


def process_scores(scores: torch.Tensor, ids: torch.Tensor, new_so_far: int, s: ScoreSettings) -> torch.Tensor:
    """(R, V) scores, (R, T) ids so far, `new_so_far` tokens made already -> the scores a token is
    picked from, in HF's order (module docstring)."""
    if s.repetition_penalty is not None and s.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, ids, s.repetition_penalty)
    if s.no_repeat_ngram_size:
        scores = no_repeat_ngram(scores, ids, s.no_repeat_ngram_size)
    if s.eos is not None and new_so_far < s.min_new_tokens:
        scores = forbid_eos(scores, s.eos)
    if s.do_sample:
        if s.temperature != 1.0:
            scores = scores / s.temperature
        if s.top_k is not None:
            scores = top_k_filter(scores, s.top_k)
        if s.top_p is not None and s.top_p < 1.0:
            scores = top_p_filter(scores, s.top_p)
    return scores
