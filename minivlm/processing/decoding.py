"""After BPE, backwards: tokens -> text, as tokenizer.json's "decoder" describes it.

Each decoder maps a list of token strings to a list of strings (tokenizers' decode_chain); the text
is their concatenation. Invalid UTF-8 becomes U+FFFD, as Rust's from_utf8_lossy does.
"""
import regex

from .bpe import unicode_to_bytes
from .pretokenize import compile_pattern

BYTE_TOKEN = regex.compile(r"<0x([0-9A-Fa-f]{2})>")


def byte_level_decoder(tokens):
    """Byte-level chars -> bytes -> text. A token with a char outside the table (an added token
    such as a CJK special) keeps its own UTF-8 bytes, as tokenizers does."""
    table, data = unicode_to_bytes(), bytearray()
    for token in tokens:
        if all(c in table for c in token):
            data.extend(table[c] for c in token)
        else:
            data.extend(token.encode("utf-8"))
    return [data.decode("utf-8", errors="replace")]


def byte_fallback_decoder(tokens):
    """Runs of <0xNN> tokens -> the text their bytes spell, or one U+FFFD per byte if invalid."""
    out, pending = [], bytearray()

    def flush():
        if pending:
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:
                out.extend("\ufffd" for _ in pending)
            pending.clear()

    for token in tokens:
        m = BYTE_TOKEN.fullmatch(token)
        if m:
            pending.append(int(m.group(1), 16))
        else:
            flush()
            out.append(token)
    flush()
    return out


def strip_decoder(content, start, stop):
    def run(tokens):
        out = []
        for token in tokens:
            left = 0
            while left < min(start, len(token)) and token[left] == content:
                left += 1
            right = len(token)
            while len(token) - right < stop and right > left and token[right - 1] == content:
                right -= 1
            out.append(token[left:right])
        return out
    return run


def metaspace_decoder(replacement, prepend_scheme):
    def run(tokens):
        out = []
        for i, token in enumerate(tokens):
            token = token.replace(replacement, " ")
            if i == 0 and prepend_scheme != "never" and token.startswith(" "):
                token = token[1:]
            out.append(token)
        return out
    return run


def decoder_from_json(spec):
    """A tokenizer.json "decoder" entry (or None) -> a function [tokens] -> text."""
    chain = decode_chain(spec)
    return lambda tokens: "".join(chain(list(tokens)))


def decode_chain(spec):
    if spec is None:  # tokenizers joins with spaces when there is no decoder
        return lambda tokens: [" ".join(tokens)]
    kind = spec["type"]
    if kind == "Sequence":
        steps = [decode_chain(s) for s in spec["decoders"]]

        def run(tokens):
            for step in steps:
                tokens = step(tokens)
            return tokens
        return run
    if kind == "ByteLevel":
        return byte_level_decoder
    if kind == "ByteFallback":
        return byte_fallback_decoder
    if kind == "Fuse":
        return lambda tokens: ["".join(tokens)]
    if kind == "Replace":
        pattern, content = compile_pattern(spec["pattern"]), spec["content"]
        return lambda tokens: [pattern.sub(lambda m: content, t) for t in tokens]
    if kind == "Strip":
        return strip_decoder(spec["content"], spec.get("start", 0), spec.get("stop", 0))
    if kind == "Metaspace":
        scheme = spec.get("prepend_scheme") or ("always" if spec.get("add_prefix_space", True) else "never")
        return metaspace_decoder(spec.get("replacement", "▁"), scheme)
    if kind == "BPEDecoder":  # CLIP's older tokenizer.json: the word suffix becomes a space, not at the end
        suffix = spec.get("suffix", "</w>")
        return lambda tokens: [t.replace(suffix, "" if i == len(tokens) - 1 else " ") for i, t in enumerate(tokens)]
    raise ValueError(f"tokenizer.json decoder type {kind!r} is not supported by minivlm")
