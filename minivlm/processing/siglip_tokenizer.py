"""SigLIP's text tokenizer: SentencePiece Unigram (unigram.py) wrapped as transformers' SiglipTokenizer.

    text -> '▁' + text ('▁' in the text read as a space) -> special tokens cut out
         -> each remaining segment canonicalised as big_vision does: lower-cased, ASCII punctuation
            removed, whitespace runs -> one space, stripped
         -> SentencePiece encode of "<unk>" + segment, the pieces of "<unk>" dropped (HF's way to
            encode a segment as if it were not at the start of the text)
         -> ids, + </s> at the end unless already there; SigLIP pads with </s> to 64 (its processor
            asks padding="max_length")
    decode: SentencePiece's decode between special tokens, which stay as text, then strip.
"""
import re
import string

from .tokenizer import Tokenizer
from .unigram import SPACE, UnigramModel

PUNCTUATION = str.maketrans("", "", string.punctuation)


def canonicalize(text, do_lower_case=True):
    """big_vision's prompt canonicalisation (HF SiglipTokenizer.canonicalize_text)."""
    if do_lower_case:
        text = text.lower()
    return re.sub(r"\s+", " ", text.translate(PUNCTUATION)).strip()


class SiglipPieces:
    """A segment of text -> SentencePiece pieces, SiglipTokenizer._tokenize's way."""

    def __init__(self, unigram: UnigramModel, unk_token="<unk>", do_lower_case=True):
        self.unigram, self.unk_token, self.do_lower_case = unigram, unk_token, do_lower_case
        self.vocab = unigram.vocab
        self.prefix_length = len(unigram.encode(unk_token))

    def tokenize(self, segment):
        pieces = [p for p, _ in self.unigram.encode(self.unk_token + canonicalize(segment, self.do_lower_case))]
        return pieces[self.prefix_length:] if len(pieces) >= self.prefix_length else pieces


class SiglipTokenizer(Tokenizer):
    def __init__(self, unigram, do_lower_case=True, eos_token="</s>", unk_token="<unk>", pad_token="</s>", **kwargs):
        pieces = SiglipPieces(unigram, unk_token, do_lower_case)
        super().__init__(pieces, normalizer=None, pre_tokenizer=None, decoder=self.join_tokens,
                         eos_token=eos_token, unk_token=unk_token, pad_token=pad_token, **kwargs)
        self.unigram = unigram
        self.template = ["A", self.eos_token_id]
        self.special_texts = {t.content for t in self.added.values() if t.special} | {eos_token, unk_token, pad_token}

    def token_to_id(self, token):
        """A merged run of unknown characters is not a piece: it is <unk> (sentencepiece's piece_to_id)."""
        found = super().token_to_id(token)
        return self.unigram.piece_id(token) if found is None and token is not None else found

    def tokenize(self, text):
        tokens = []
        for segment, added, _ in self.split_added(SPACE + text.replace(SPACE, " "), self._raw_pattern):
            tokens.extend([added.content] if added is not None else self.model.tokenize(segment))
        if len(tokens) > 1 and tokens[0] == SPACE and tokens[1] in self.special_texts:
            tokens = tokens[1:]  # HF: no lone '▁' before a special token at the start
        return tokens

    def add_special_tokens(self, ids):
        """</s> at the end, unless the ids already end with it (HF's _add_eos_if_not_present)."""
        return ids if ids and ids[-1] == self.eos_token_id else ids + [self.eos_token_id]

    def join_tokens(self, tokens):
        """SiglipTokenizer.convert_tokens_to_string: SentencePiece decodes the runs between special
        tokens; a special token is written as is, after one space."""
        out, run, prev_special = "", [], False
        for token in tokens:
            if token in self.special_texts:
                out += ("" if prev_special else " ") + self.unigram.decode(run) + token
                run, prev_special = [], True
            else:
                run.append(token)
                prev_special = False
        return (out + self.unigram.decode(run)).strip()
