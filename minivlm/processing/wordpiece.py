"""BERT's WordPiece tokeniser (Wu et al. 2016; Devlin et al. 2019), as `tokenizers` runs it.

    text -> BertNormalizer -> BertPreTokenizer -> WordPiece each word -> ids
    ids  -> tokens -> WordPiece decoder (join "##" pieces, one space before every other token)

- BertNormalizer: drop control characters, every whitespace -> " " (clean_text); a space on each
  side of every CJK ideograph (handle_chinese_chars), so each becomes its own word; NFD and drop
  non-spacing marks (strip_accents; None follows lowercase, as in the original BERT); lower-case.
- BertPreTokenizer: split on whitespace (dropped), then every punctuation character on its own.
- WordPiece: greedy longest-match-first from the left; pieces after the first carry the "##"
  prefix; a word with a part no vocabulary entry covers, or longer than max_input_chars_per_word
  characters, becomes a single unk token.

Character classes follow the Rust crates `tokenizers` uses: whitespace is Unicode White_Space
(Python's str.isspace also counts U+001C..U+001F); "control" is category Cc, Cf or Co but not
unassigned Cn; punctuation is ASCII punctuation (which includes $ + < = > ^ ` | ~) or category P*.
(`tokenizers` ships older/newer Unicode tables than Python's unicodedata: a few hundred recently
assigned code points in rare scripts classify differently.)
"""
import string
import unicodedata

from .decoding import decoder_from_json
from .pretokenize import chain, normalizer_from_json, pretokenizer_from_json, sequence

# Unicode White_Space (Rust's char::is_whitespace).
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                       "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
ASCII_PUNCTUATION = frozenset(string.punctuation)
# The CJK Unified Ideographs blocks BERT spaces out (Hangul, kana are ordinary letters).
CHINESE_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
                  (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_chinese(c):
    cp = ord(c)
    return any(lo <= cp <= hi for lo, hi in CHINESE_RANGES)


def is_control(c):
    # \t \n \r are Cc but BERT treats them as whitespace; unassigned (Cn) characters are kept.
    return c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf", "Co")


def is_punctuation(c):
    return c in ASCII_PUNCTUATION or unicodedata.category(c).startswith("P")


# --- normaliser: str -> str -------------------------------------------------------------------

def bert_normalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True):
    strip_accents = lowercase if strip_accents is None else strip_accents

    def run(text):
        if clean_text:  # NUL and U+FFFD go too
            text = "".join(" " if c in WHITESPACE else c for c in text
                           if c not in "\x00\ufffd" and not is_control(c))
        if handle_chinese_chars:
            text = "".join(f" {c} " if is_chinese(c) else c for c in text)
        if strip_accents:  # the text stays decomposed (NFD), as in tokenizers
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if lowercase:
            # Character by character, as Rust's char::to_lowercase: no final-sigma rule (str.lower has one).
            text = "".join(c.lower() for c in text)
        return text
    return run


# --- pre-tokeniser: (piece, at_start) -> [words] ----------------------------------------------

def bert_pre_tokenizer(piece, at_start=False):
    """Whitespace runs separate words and vanish; each punctuation character is a word of its own."""
    words, current = [], []
    for c in piece:
        if c in WHITESPACE or is_punctuation(c):
            if current:
                words.append("".join(current))
                current = []
            if c not in WHITESPACE:
                words.append(c)
        else:
            current.append(c)
    if current:
        words.append("".join(current))
    return words


# --- model: word -> [tokens] ------------------------------------------------------------------

class WordPiece:
    """vocab {token: id}; tokenize(word) -> greedy longest-match-first pieces, or [unk_token]."""

    def __init__(self, vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100):
        self.vocab = dict(vocab)
        if unk_token not in self.vocab:
            raise ValueError(f"WordPiece's unk_token {unk_token!r} is not in the vocabulary "
                             f"({len(self.vocab)} entries); every unknown word needs it")
        self.unk_token, self.prefix = unk_token, continuing_subword_prefix
        self.max_chars = max_input_chars_per_word

    @classmethod
    def from_json(cls, model):
        """tokenizer.json's "model" (type WordPiece) -> WordPiece."""
        if model.get("type", "WordPiece") != "WordPiece":
            raise ValueError(f"tokenizer.json model type {model.get('type')!r} is not WordPiece")
        return cls(model["vocab"], model.get("unk_token", "[UNK]"), model.get("continuing_subword_prefix", "##"),
                   model.get("max_input_chars_per_word", 100))

    def tokenize(self, word):
        if len(word) > self.max_chars:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            # The longest vocabulary entry starting here; O(len^2) lookups, words are short.
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    break
            else:
                return [self.unk_token]  # one uncovered part makes the whole word unknown
            pieces.append(piece)
            start = end
        return pieces


def read_vocab_txt(path):
    """vocab.txt: one token per line, its line number the id. Lines end at "\\n" only (not at the
    other characters str.splitlines breaks on) and lose trailing whitespace, as tokenizers reads it;
    a repeated token keeps its last line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return {line.rstrip("".join(WHITESPACE)): i for i, line in enumerate(lines)}


# --- decoding: tokens -> text -----------------------------------------------------------------

# tokenizers' WordPiece decoder cleanup, applied to each token (with its leading space) on its own.
TOKEN_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                 (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
# transformers' clean_up_tokenization (clean_up_tokenization_spaces=True), on the whole decoded text.
TEXT_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def replace_all(text, pairs):
    for old, new in pairs:
        text = text.replace(old, new)
    return text


def clean_up_tokenization(text):
    return replace_all(text, TEXT_CLEANUP)


def wordpiece_decoder(prefix="##", cleanup=True):
    """Tokens -> pieces: a token after the first loses its "##" or gains a leading space."""
    def run(tokens):
        out = []
        for i, token in enumerate(tokens):
            if i > 0:
                token = token[len(prefix):] if token.startswith(prefix) else " " + token
            out.append(replace_all(token, TOKEN_CLEANUP) if cleanup else token)
        return out
    return run


# --- tokenizer.json components, the BERT ones added to pretokenize.py's / decoding.py's --------

def wp_normalizer_from_json(spec):
    if spec is not None and spec["type"] == "BertNormalizer":
        return bert_normalizer(spec.get("clean_text", True), spec.get("handle_chinese_chars", True),
                               spec.get("strip_accents"), spec.get("lowercase", True))
    if spec is not None and spec["type"] == "Sequence":
        return sequence([wp_normalizer_from_json(s) for s in spec["normalizers"]])
    return normalizer_from_json(spec)


def wp_pretokenizer_from_json(spec):
    if spec is not None and spec["type"] == "BertPreTokenizer":
        return bert_pre_tokenizer
    if spec is not None and spec["type"] == "Sequence":
        return chain([wp_pretokenizer_from_json(s) for s in spec["pretokenizers"]])
    return pretokenizer_from_json(spec)


def wp_decoder_from_json(spec):
    if spec is not None and spec["type"] == "WordPiece":
        chain_ = wordpiece_decoder(spec.get("prefix", "##"), spec.get("cleanup", True))
        return lambda tokens: "".join(chain_(list(tokens)))
    return decoder_from_json(spec)
