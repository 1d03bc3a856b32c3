"""stop_strings: stop a row as soon as a token completes one of the given strings (HF's
StopStringCriteria, generate(stop_strings=..., tokenizer=...)).

A match must touch the newest token: the stop string starts at or before the start of the last
token's text and ends inside it ("st" + "opera" matches "stop"; "stop" + "at" does not, that match
was already caught a step earlier). HF precomputes this over the vocabulary's token strings so it
can run on the device; here the tail of each row is decoded with the tokenizer, which is the same
test on the decoded text (it costs a host sync and a decode per step, only when stop strings are set).
"""
import torch


class StopStrings:
    def __init__(self, strings, tokenizer):
        strings = [strings] if isinstance(strings, str) else list(strings)
        if not strings or not all(isinstance(s, str) and s for s in strings):
            raise ValueError(f"stop_strings must be a non-empty string or a list of them, got {strings!r}")
        if tokenizer is None or not hasattr(tokenizer, "decode"):
            raise ValueError("stop_strings need the tokenizer to read the text: generate(..., stop_strings=..., "
                             f"tokenizer=tok) (as HF's generate), got tokenizer={tokenizer!r}")
        self.strings, self.tokenizer = strings, tokenizer
        # every token holds at least one character, so the last len(s) + 1 tokens cover any match
        self.window = max(len(s) for s in strings) + 1

    def hit(self, text_before: str, text: str) -> bool:
        """Does a stop string start at or before the last token's text and end inside it?"""
        start = common_prefix_length(text_before, text)  # where the last token's text begins
        return any(text.startswith(s, i) for s in self.strings for i in range(max(0, start - len(s) + 1), start + 1))

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """(R, T) ids -> (R,) bool: the row's last token completes a stop string."""
        rows = ids[:, -self.window:].tolist()
        hits = [self.hit(self.tokenizer.decode(r[:-1]), self.tokenizer.decode(r)) for r in rows]
        return torch.tensor(hits, dtype=torch.bool, device=ids.device)


def common_prefix_length(a: str, b: str) -> int:
    """len(a) when b extends a; shorter where decoding the longer row changed a's last characters
    (an incomplete UTF-8 byte sequence completed by the new token)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
