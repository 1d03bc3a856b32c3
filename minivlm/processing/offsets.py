"""Which characters of the text each token came from: tokenizers' offsets, for a Tokenizer.

The assistant mask of a chat needs it: the template marks the reply as characters, the loss needs
tokens. Every stage of the pipeline moves characters, so each keeps, per output character, the
index of the input character it stands for ("origins"):

    text --split out added tokens--> segments (offsets known)
         --normaliser--> normalised text          (aligned by `align`: equal, lower-cased,
         --pre-tokeniser--> words                   " " -> "▁", inserted "▁", dropped whitespace)
         --byte-level--> one character per UTF-8 byte (each byte keeps its character's origin)
         --BPE--> tokens, each covering word[start:end] (BPE.tokenize_spans)

as tokenizers reports them: a token made of some of a character's bytes (a byte-level piece of an
emoji, a <0xNN> byte-fallback token) covers that whole character; SentencePiece's inserted "▁"
belongs to the character after it.
"""
import unicodedata

from .bpe import BPE, unicode_to_bytes

SPACE = "\u2581"


def same_char(source, out):
    return source == out or (out == SPACE and source == " ") or source.lower() == out


def align(source, out):
    """For each character of `out` (a normalised / pre-tokenised form of `source`), the index of the
    source character it came from. A prefix inserted in front (SentencePiece's "▁") belongs to the
    first character. Otherwise greedy, left to right: a matching character advances; a character
    NFC composed from several (e + U+0301 -> é) takes the first one's index; source whitespace the
    pipeline dropped is skipped; a character with no match belongs to the next source character."""
    n, extra = len(source), len(out) - len(source)
    if extra > 0 and all(same_char(a, b) for a, b in zip(source, out[extra:])):
        return [0] * extra + list(range(n))
    origins, p = [], 0
    for ch in out:
        q = p
        while q < n and source[q].isspace() and not same_char(source[q], ch):
            q += 1
        if q < n and same_char(source[q], ch):
            origins.append(q)
            p = q + 1
            continue
        composed = next((m for m in range(2, 5) if unicodedata.normalize("NFC", source[p:p + m]) == ch), None)
        origins.append(min(p, n - 1))
        if composed is not None:
            p += composed
    return origins


def is_byte_level(tokenizer):
    """Does the pre-tokeniser write text as byte-level characters ("é" -> "Ã©")?"""
    pre = tokenizer.pre_tokenizer
    return pre is not None and "Ã©" in "".join(pre("é", False))


def tokenize_with_offsets(tokenizer, text):
    """text -> [(token, start, end)] with text[start:end] the characters the token came from (no
    bos/eos: those are added later and cover no text)."""
    if not isinstance(tokenizer.model, BPE) or tokenizer.pre_tokenizer is None:
        raise NotImplementedError(f"character offsets are implemented for BPE tokenizers; this one's model is "
                                  f"{type(tokenizer.model).__name__}")
    byte_level, table = is_byte_level(tokenizer), unicode_to_bytes()
    out = []
    for segment, added, offset in tokenizer.split_added(text, tokenizer._raw_pattern):
        if added is not None:
            out.append((added.content, offset, offset + len(segment)))
            continue
        normalized = tokenizer.normalizer(segment)
        norm_origin = [offset + i for i in align(segment, normalized)]
        for piece, added2, at in tokenizer.split_added(normalized, tokenizer._normalized_pattern):
            if added2 is not None:
                out.append((added2.content, norm_origin[at], norm_origin[at + len(piece) - 1] + 1))
                continue
            words = [w for w in tokenizer.pre_tokenizer(piece, offset + at == 0) if w]
            surfaces = [bytes(table[c] for c in w).decode("utf-8") if byte_level else w for w in words]
            piece_origin = align(piece, "".join(surfaces))
            k = 0
            for word, surface in zip(words, surfaces):
                origin = [norm_origin[at + o] for o in piece_origin[k:k + len(surface)]]
                k += len(surface)
                if byte_level:  # one origin per byte-level character
                    origin = [o for ch, o in zip(surface, origin) for _ in ch.encode("utf-8")]
                for token, a, b in tokenizer.model.tokenize_spans(word):
                    out.append((token, origin[a], origin[b - 1] + 1))
    return out


def char_to_token(offsets, position):
    """The index of the first token whose characters include `position` (tokenizers'
    Encoding.char_to_token), or None."""
    for i, (start, end) in enumerate(offsets):
        if start <= position < end:
            return i
    return None
