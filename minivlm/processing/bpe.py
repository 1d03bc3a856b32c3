"""Byte-pair encoding: the byte -> unicode table and the merge loop (Sennrich et al. 2016; GPT-2's
byte-level variant, Radford et al. 2019).

BPE turns one pre-token ("word") into vocabulary tokens: start from single characters, then
repeatedly join the adjacent pair whose merge was learned earliest (lowest rank) until no learned
merge applies. Options cover the three families minivlm reads:
- CLIP: the last symbol of a word carries the `</w>` suffix (end_of_word_suffix);
- Llama 3: `ignore_merges` — a word that is itself in the vocabulary is taken whole;
- Llama 2 (SentencePiece style): characters missing from the vocabulary become their UTF-8 bytes
  as `<0xNN>` tokens (byte_fallback); remaining unknowns become unk, consecutive ones fused (fuse_unk).
"""
from functools import lru_cache


@lru_cache(maxsize=1)
def bytes_to_unicode():
    """GPT-2's table: each of the 256 bytes -> a printable unicode character.

    Printable latin-1 bytes map to themselves; the other 68 (controls, space, ...) are shifted to
    chr(256 + n) so that a byte string becomes a visible string with no whitespace in it ("Ġ" is
    the space byte 0x20). BPE then works on these characters, and decoding maps them back.
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, shifted = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


@lru_cache(maxsize=1)
def unicode_to_bytes():
    return {c: b for b, c in bytes_to_unicode().items()}


def byte_level(text):
    """A string -> its UTF-8 bytes written with the byte -> unicode table."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


class BPE:
    """vocab {token: id} and merges [(left, right)] in rank order -> tokenize(word) -> [token]."""

    def __init__(self, vocab, merges, unk_token=None, end_of_word_suffix="", continuing_subword_prefix="",
                 byte_fallback=False, fuse_unk=False, ignore_merges=False):
        self.vocab = dict(vocab)
        self.ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self.unk_token = unk_token
        self.end_of_word_suffix = end_of_word_suffix or ""
        self.continuing_subword_prefix = continuing_subword_prefix or ""
        self.byte_fallback, self.fuse_unk, self.ignore_merges = byte_fallback, fuse_unk, ignore_merges
        self._cache = {}

    def initial_symbols(self, word):
        """One symbol per character, with the prefix/suffix decorations; characters not in the
        vocabulary become <0xNN> byte tokens (byte_fallback) or the unk token, or raise."""
        symbols = []
        for i, ch in enumerate(word):
            sym = ch
            if i > 0:
                sym = self.continuing_subword_prefix + sym
            if i == len(word) - 1:
                sym = sym + self.end_of_word_suffix
            if sym in self.vocab:
                symbols.append(sym)
                continue
            byte_tokens = [f"<0x{b:02X}>" for b in ch.encode("utf-8")]
            if self.byte_fallback and all(t in self.vocab for t in byte_tokens):
                # Byte tokens never merge with neighbours: mark them so the merge loop skips them.
                symbols.extend((t, "byte") for t in byte_tokens)
            elif self.unk_token is None:
                raise ValueError(f"character {ch!r} is not in the vocabulary and the tokenizer has no unk token")
            elif self.fuse_unk and symbols and symbols[-1] == (self.unk_token, "unk"):
                continue
            else:
                symbols.append((self.unk_token, "unk"))
        return symbols

    def merge(self, symbols):
        """Repeatedly join the leftmost occurrence of the lowest-rank adjacent pair (the order of
        tokenizers' priority queue; equal to GPT-2's loop for any merges list a trainer writes)."""
        while len(symbols) > 1:
            best, best_rank = None, None
            for i in range(len(symbols) - 1):
                a, b = symbols[i], symbols[i + 1]
                if isinstance(a, tuple) or isinstance(b, tuple):
                    continue
                rank = self.ranks.get((a, b))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best is None:
                break
            a, b = symbols[best], symbols[best + 1]
            joined = a + b[len(self.continuing_subword_prefix):]
            symbols[best:best + 2] = [joined]
        return [s[0] if isinstance(s, tuple) else s for s in symbols]

    def tokenize(self, word):
        if word in self._cache:
            return self._cache[word]
        if self.ignore_merges and word in self.vocab:
            tokens = [word]  # Llama 3's tokenizer.json sets ignore_merges: a known word is one token
        else:
            tokens = self.merge(self.initial_symbols(word))
        if len(self._cache) < 100_000:
            self._cache[word] = tokens
        return tokens
