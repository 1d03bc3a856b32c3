"""Streamers: see the tokens as generate makes them (HF's BaseStreamer protocol).

generate calls `streamer.put(ids)` once with the prompt ids (B, L) (empty when the prompt came as
embeddings), then once per step with the new ids (B,), and `streamer.end()` when it stops. HF's own
streamers (transformers.TextStreamer ...) work here too, and ours work with HF's generate.
Each `put` moves the new ids to the host: streaming costs one sync per step, by nature.
"""
import sys

import torch


class TokenStreamer:
    """Collects the ids as they come (for tests and for callers that decode themselves).
    `on_token(ids)` is called with each step's (B,) ids as a list."""

    def __init__(self, on_token=None):
        self.prompt, self.tokens, self.ended, self.on_token = None, [], False, on_token

    def put(self, ids: torch.Tensor):
        if self.prompt is None:
            self.prompt = ids.tolist()
            return
        self.tokens.append(ids.tolist())
        if self.on_token is not None:
            self.on_token(self.tokens[-1])

    def end(self):
        self.ended = True


class TextStreamer:
    """Prints the decoded new text as it grows (one row only, like HF's TextStreamer).

    The whole reply is decoded again each step and only the new characters are printed, so a word
    split over several tokens, or a character over several byte tokens, comes out right; a trailing
    U+FFFD (an incomplete UTF-8 sequence) waits for the token that completes it.
    skip_prompt: do not print the prompt. decode_kwargs go to tokenizer.decode (e.g. skip_special_tokens).
    """

    def __init__(self, tokenizer, skip_prompt: bool = False, file=None, **decode_kwargs):
        self.tokenizer, self.skip_prompt, self.decode_kwargs = tokenizer, skip_prompt, decode_kwargs
        self.file = file
        self.ids, self.printed, self.prompt_seen = [], 0, False
        self.text = ""  # what this generate call printed so far

    def put(self, ids: torch.Tensor):
        if ids.dim() and ids.shape[0] > 1:
            raise ValueError(f"TextStreamer prints one row; generate was given {ids.shape[0]} rows")
        if not self.prompt_seen:  # a new generate call
            self.prompt_seen, self.text = True, ""
            if self.skip_prompt:
                return
        self.ids.extend(ids.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids, **self.decode_kwargs)
        if text.endswith("\ufffd"):
            return
        self.emit(text[self.printed:])
        self.printed = len(text)

    def end(self):
        text = self.tokenizer.decode(self.ids, **self.decode_kwargs)
        self.emit(text[self.printed:], end=True)
        self.ids, self.printed, self.prompt_seen = [], 0, False

    def emit(self, text: str, end: bool = False):
        """Where the text goes: stdout (or `file`); override to send it elsewhere."""
        self.text += text
        out = self.file or sys.stdout
        print(text, end="\n" if end else "", file=out, flush=True)
