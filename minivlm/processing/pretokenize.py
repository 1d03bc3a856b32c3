"""Before BPE: normalisers (text -> text) and pre-tokenisers (text -> pieces), as tokenizer.json
describes them (the `tokenizers` library's component types, same names and semantics).

A pre-tokeniser is a function (piece, at_start) -> [pieces]; `at_start` says whether the piece
begins the original input, which Metaspace's prepend_scheme "first" needs. Patterns use the
`regex` module because the byte-level patterns need unicode classes (\\p{L}, \\p{N}) that Python's
`re` lacks.
"""
import unicodedata

import regex

from .bpe import byte_level

# GPT-2's pre-tokenisation (the ByteLevel pre-tokeniser's use_regex): contractions, words with an
# optional leading space, numbers, punctuation runs, whitespace (a run before a word leaves its last
# space to the word).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# CLIP's (HF CLIPTokenizer): the specials, contractions, letter runs, single digits, punctuation runs;
# whitespace is dropped (the Split removes what does not match).
CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# Llama 3's (tiktoken cl100k style): case-insensitive contractions, words with one leading non-letter,
# numbers in groups of up to 3 digits, punctuation with trailing newlines, newline runs, spaces.
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2's (HF Qwen2Tokenizer's PRETOKENIZE_REGEX): Llama 3's with every digit its own piece.
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")


def compile_pattern(spec):
    """tokenizer.json's {"String": s} (a literal) or {"Regex": r} -> a compiled pattern."""
    if isinstance(spec, str):
        return regex.compile(regex.escape(spec))
    if "String" in spec:
        return regex.compile(regex.escape(spec["String"]))
    return regex.compile(spec["Regex"])


# --- normalisers: str -> str ------------------------------------------------------------------

def sequence(steps):
    def run(text):
        for step in steps:
            text = step(text)
        return text
    return run


def normalizer_from_json(spec):
    """A tokenizer.json "normalizer" entry (or None) -> a function str -> str."""
    if spec is None:
        return lambda text: text
    kind = spec["type"]
    if kind == "Sequence":
        return sequence([normalizer_from_json(s) for s in spec["normalizers"]])
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return lambda text: unicodedata.normalize(kind, text)
    if kind == "Lowercase":
        return str.lower
    if kind == "Replace":
        pattern, content = compile_pattern(spec["pattern"]), spec["content"]
        return lambda text: pattern.sub(lambda m: content, text)
    if kind == "Prepend":  # SentencePiece's dummy prefix, added only to non-empty text
        prefix = spec["prepend"]
        return lambda text: prefix + text if text else text
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)
        return lambda text: (text.lstrip() if left else text).rstrip() if right else (text.lstrip() if left else text)
    raise ValueError(f"tokenizer.json normalizer type {kind!r} is not supported by minivlm")


# --- pre-tokenisers: (piece, at_start) -> [pieces] ---------------------------------------------

def split_spans(text, pattern, invert=False):
    """Cover the text with (start, end, is_match) spans of the pattern's matches and the gaps."""
    spans, last = [], 0
    for m in pattern.finditer(text):
        if m.start() == m.end():
            continue
        if m.start() > last:
            spans.append((last, m.start(), invert))
        spans.append((m.start(), m.end(), not invert))
        last = m.end()
    if last < len(text):
        spans.append((last, len(text), invert))
    return spans


def split_by(text, pattern, behavior, invert=False):
    """tokenizers' Split behaviours: what happens to the matched delimiters."""
    spans = split_spans(text, pattern, invert)
    behavior = behavior.lower()
    if behavior == "removed":
        return [text[s:e] for s, e, is_match in spans if not is_match]
    if behavior == "isolated":
        return [text[s:e] for s, e, _ in spans]
    pieces = []
    if behavior == "mergedwithprevious":
        for s, e, is_match in spans:
            if is_match and pieces:
                pieces[-1] += text[s:e]
            else:
                pieces.append(text[s:e])
        return pieces
    if behavior == "mergedwithnext":
        carry = ""
        for s, e, is_match in spans:
            if is_match:
                carry += text[s:e]
            else:
                pieces.append(carry + text[s:e])
                carry = ""
        return pieces + ([carry] if carry else [])
    if behavior == "contiguous":
        previous_match = None
        for s, e, is_match in spans:
            if is_match and previous_match:
                pieces[-1] += text[s:e]
            else:
                pieces.append(text[s:e])
            previous_match = is_match
        return pieces
    raise ValueError(f"unknown Split behavior {behavior!r}")


def chain(steps):
    """Apply pre-tokenisers one after the other; only the first sub-piece of a starting piece starts."""
    def run(piece, at_start):
        pieces = [(piece, at_start)]
        for step in steps:
            pieces = [(p, start and i == 0) for piece_, start in pieces for i, p in enumerate(step(piece_, start))]
        return [p for p, _ in pieces]
    return run


def byte_level_pretokenizer(add_prefix_space=False, use_regex=True):
    pattern = regex.compile(GPT2_PATTERN)

    def run(piece, at_start):
        if add_prefix_space and not piece.startswith(" "):
            piece = " " + piece
        pieces = split_by(piece, pattern, "isolated") if use_regex else [piece]
        return [byte_level(p) for p in pieces]
    return run


def metaspace(replacement="▁", prepend_scheme="always", split=True):
    """SentencePiece's view of spaces: ' ' -> '▁', a '▁' prefixed to the text (always, or only when
    the piece starts the input: "first"), and, with split, one piece per '▁'-started word."""
    def run(piece, at_start):
        piece = piece.replace(" ", replacement)
        if not piece.startswith(replacement) and (prepend_scheme == "always" or (prepend_scheme == "first" and at_start)):
            piece = replacement + piece
        if not split:
            return [piece]
        return split_by(piece, compile_pattern(replacement), "mergedwithnext")
    return run


def pretokenizer_from_json(spec):
    """A tokenizer.json "pre_tokenizer" entry (or None) -> a function (piece, at_start) -> [pieces]."""
    if spec is None:
        return lambda piece, at_start: [piece]
    kind = spec["type"]
    if kind == "Sequence":
        return chain([pretokenizer_from_json(s) for s in spec["pretokenizers"]])
    if kind == "Split":
        pattern = compile_pattern(spec["pattern"])
        return lambda piece, at_start: split_by(piece, pattern, spec["behavior"], spec.get("invert", False))
    if kind == "ByteLevel":
        return byte_level_pretokenizer(spec.get("add_prefix_space", False), spec.get("use_regex", True))
    if kind == "Metaspace":
        scheme = spec.get("prepend_scheme")
        if scheme is None:  # older files: add_prefix_space
            scheme = "always" if spec.get("add_prefix_space", True) else "never"
        return metaspace(spec.get("replacement", "▁"), scheme, spec.get("split", True))
    raise ValueError(f"tokenizer.json pre_tokenizer type {kind!r} is not supported by minivlm")
