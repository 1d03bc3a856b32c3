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
import heapq
import re
from functools import lru_cache

SPACE = "\u2581"  # "▁", SentencePiece's visible space
SPLIT_BEFORE_SPACE = re.compile(f"(?<=[^{SPACE}])(?={SPACE})")
DEAD = object()  # marks a symbol merged into its left neighbour


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
        self.continuing_subword_prefix = continuing_subword_prefix or ""
        # (left, right) -> (rank, the joined symbol): what the merge loop looks up.
        self.pairs = {pair: (rank, self.join(*pair)) for pair, rank in self.ranks.items()}
        self.unk_token = unk_token
        self.end_of_word_suffix = end_of_word_suffix or ""
        self.byte_fallback, self.fuse_unk, self.ignore_merges = byte_fallback, fuse_unk, ignore_merges
        self._cache = {}
        # SentencePiece-style pipelines (Llama 2, Mistral) hand BPE a whole line as one word. When no
        # merge can join a character to a following "▁" (true of SentencePiece vocabularies, whose
        # pieces hold "▁" only in front), the line splits before each such "▁" into words that
        # merge independently: the same tokens, shorter words, and repeated words hit the cache.
        decorated = self.end_of_word_suffix or self.continuing_subword_prefix or ignore_merges
        self.split_before_space = (SPACE in self.vocab and not decorated
                                   and not any(b.startswith(SPACE) and not a.endswith(SPACE) for a, b in self.ranks))

    def initial_symbols(self, word):
        """One symbol per character, with the prefix/suffix decorations; characters not in the
        vocabulary become <0xNN> byte tokens (byte_fallback) or the unk token, or raise.
        Returns [(symbol, start, end, frozen)]: the characters word[start:end] it stands for, and
        whether it may never merge (byte and unk tokens)."""
        symbols, last = [], len(word) - 1
        for i, ch in enumerate(word):
            sym = ch
            if i > 0 and self.continuing_subword_prefix:
                sym = self.continuing_subword_prefix + sym
            if i == last and self.end_of_word_suffix:
                sym = sym + self.end_of_word_suffix
            if sym in self.vocab:
                symbols.append((sym, i, i + 1, False))
                continue
            byte_tokens = [f"<0x{b:02X}>" for b in ch.encode("utf-8")]
            if self.byte_fallback and all(t in self.vocab for t in byte_tokens):
                # Byte tokens never merge with neighbours; each stands for the whole character.
                symbols.extend((t, i, i + 1, True) for t in byte_tokens)
            elif self.unk_token is None:
                raise ValueError(f"character {ch!r} is not in the vocabulary and the tokenizer has no unk token")
            elif self.fuse_unk and symbols and symbols[-1][0] == self.unk_token and symbols[-1][3]:
                symbols[-1] = (self.unk_token, symbols[-1][1], i + 1, True)
            else:
                symbols.append((self.unk_token, i, i + 1, True))
        return symbols

    def join(self, a, b):
        return a + b[len(self.continuing_subword_prefix):]

    def merge_once(self, symbols):
        """One step of the textbook loop: scan the word for the lowest-rank adjacent pair and join
        its leftmost occurrence. Returns the new symbols, or None when no learned merge applies."""
        best, best_rank = None, None
        for i in range(len(symbols) - 1):
            (a, _, _, frozen_a), (b, _, _, frozen_b) = symbols[i], symbols[i + 1]
            rank = None if frozen_a or frozen_b else self.ranks.get((a, b))
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best is None:
            return None
        (a, start, _, _), (b, _, end, _) = symbols[best], symbols[best + 1]
        return [*symbols[:best], (self.join(a, b), start, end, False), *symbols[best + 2:]]

    def merge_by_rescan(self, symbols):
        """merge_once until nothing merges: O(n) per merge, O(n^2) per word. For reading, and the
        reference the tests hold `merge` to; `merge` gives the same result from a priority queue."""
        symbols = list(symbols)
        while (merged := self.merge_once(symbols)) is not None:
            symbols = merged
        return symbols

    def merge(self, symbols):
        """Join adjacent pairs, lowest rank first and leftmost first among equals (the order of
        tokenizers' priority queue; equal to GPT-2's loop for any merges list a trainer writes).

        The symbols form a linked list (nxt / prev); a heap holds (rank, position, joined) of every
        mergeable adjacent pair. Popping gives the next merge; an entry made stale by an earlier
        merge (its left symbol gone or changed, so the pair at that position no longer has that
        rank) is dropped when it comes up ("lazy invalidation"). Each merge pushes at most two new
        pairs: O(n log n) per word instead of the rescan's O(n^2)."""
        n = len(symbols)
        if n < 2:
            return list(symbols)
        pairs, push, pop = self.pairs, heapq.heappush, heapq.heappop
        # key: what a pair is looked up by; a byte/unk token is None and a merged-away one DEAD,
        # which appear in no merge, so they never pair.
        key = [None if frozen else sym for sym, _, _, frozen in symbols]
        end = [s[2] for s in symbols]
        nxt, prev = list(range(1, n + 1)), list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            hit = pairs.get((key[i], key[i + 1]))
            if hit is not None:
                heap.append((hit[0], i, hit[1]))
        heapq.heapify(heap)
        while heap:
            rank, i, joined = pop(heap)
            j = nxt[i]
            if j >= n:
                continue
            hit = pairs.get((key[i], key[j]))
            if hit is None or hit[0] != rank:
                continue  # stale: this position's pair changed since the entry was pushed
            key[i], key[j], end[i] = joined, DEAD, end[j]
            k = nxt[i] = nxt[j]
            if k < n:
                prev[k] = i
                hit = pairs.get((joined, key[k]))
                if hit is not None:
                    push(heap, (hit[0], i, hit[1]))
            h = prev[i]
            if h >= 0:
                hit = pairs.get((key[h], joined))
                if hit is not None:
                    push(heap, (hit[0], h, hit[1]))
        out, i = [], 0
        while i < n:
            sym = key[i]
            out.append((symbols[i][0] if sym is None else sym, symbols[i][1], end[i], sym is None))
            i = nxt[i]
        return out

    def tokenize_spans(self, word):
        """word -> [(token, start, end)]: each token and the characters word[start:end] it covers."""
        if self.ignore_merges and word in self.vocab:
            return [(word, 0, len(word))]  # Llama 3's tokenizer.json sets ignore_merges: a known word is one token
        return [(t, a, b) for t, a, b, _ in self.merge(self.initial_symbols(word))]

    def tokenize(self, word):
        if self.split_before_space and SPACE in word[1:]:
            return [t for part in SPLIT_BEFORE_SPACE.split(word) for t in self.tokenize_word(part)]
        return self.tokenize_word(word)

    def tokenize_word(self, word):
        tokens = self._cache.get(word)
        if tokens is None:
            tokens = [t for t, _, _ in self.tokenize_spans(word)]
            if len(self._cache) < 100_000:
                self._cache[word] = tokens
        return tokens
