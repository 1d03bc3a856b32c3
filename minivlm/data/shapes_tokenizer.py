"""A word-level tokenizer for the shapes world: one id per word, built from the world's own words.

Why not the BPE of minivlm/processing? The shapes world speaks about forty words. A word-level
vocabulary makes every id readable ("red" is one token, always the same one), needs no training
step, is identical on every machine, and keeps the embedding table tiny. The models do not care:
they read ids. (A real checkpoint's BPE is loaded with weights_convert.load_tokenizer.)

    tok = ShapesTokenizer()
    tok.encode("a red circle on the left")      # [bos, a, red, circle, on, the, left, eos]
    tok(["a red circle", "a blue square on the right"])   # {"input_ids": (2, L), "attention_mask": (2, L)}
    tok.decode(ids)                             # "a red circle on the left"
    tok.save_pretrained("runs/clip")            # tokenizer.json: load_tokenizer / AutoTokenizer read it

Ids: 0 = <pad>, then the words in sorted order, then <bos> and <eos> LAST. As in CLIP's
vocabulary, end-of-text is the largest id, so CLIP's pooling finds it by either rule (first
eos_token_id, or the legacy argmax of a row) and it can never be confused with a word.
"""
import json
import re
from pathlib import Path

import torch

from .shapes import COLORS, NUMBERS, SHAPES

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
# Every word the captions and questions of shapes.py use, besides colours, shapes and numbers.
# ("color" is the questions' spelling; prompts for zero-shot use only these words too.)
GRAMMAR_WORDS = ("a", "and", "are", "color", "how", "in", "is", "it", "left", "many", "middle", "on", "right",
                 "shape", "shapes", "the", "there", "what", "where", "?")
_WORD = re.compile(r"[a-z]+|\?")


def shapes_vocabulary(extra_words=()):
    """The ordered token list: <pad>, the sorted words, <bos>, <eos>. Deterministic (no data scan)."""
    words = set(GRAMMAR_WORDS) | set(COLORS) | set(SHAPES) | set(NUMBERS) | set(extra_words)
    return [PAD] + sorted(words) + [BOS, EOS]


class ShapesTokenizer:
    def __init__(self, extra_words=(), max_length=16):
        self.vocab = shapes_vocabulary(extra_words)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.pad_token_id, self.bos_token_id, self.eos_token_id = self.ids[PAD], self.ids[BOS], self.ids[EOS]
        self.max_length = max_length

    @property
    def vocab_size(self):
        return len(self.vocab)

    def __len__(self):
        return len(self.vocab)

    def words(self, text):
        """Lower-case, '?' split off; anything that is not a word of this world is an error."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        words = _WORD.findall(text.lower())
        leftover = _WORD.sub("", text.lower()).strip()
        unknown = [w for w in words if w not in self.ids] + ([leftover] if leftover else [])
        if unknown:
            raise ValueError(f"{unknown} not in the shapes-world vocabulary ({len(self.vocab)} tokens); "
                             f"known words: {' '.join(self.vocab[1:-2])}")
        return words

    def encode(self, text, add_special_tokens=True):
        ids = [self.ids[w] for w in self.words(text)]
        return [self.bos_token_id, *ids, self.eos_token_id] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens=True):
        if torch.is_tensor(ids):
            ids = ids.tolist()
        bad = [i for i in ids if not 0 <= i < len(self.vocab)]
        if bad:
            raise ValueError(f"ids {bad} are outside the vocabulary of {len(self.vocab)} tokens")
        special = {self.pad_token_id, self.bos_token_id, self.eos_token_id} if skip_special_tokens else set()
        return " ".join(self.vocab[i] for i in ids if i not in special).replace(" ?", "?")

    def save_pretrained(self, folder):
        """tokenizer.json + tokenizer_config.json that weights_convert.load_tokenizer and transformers'
        AutoTokenizer read, giving this tokenizer's ids: a WordPiece model whose every word is one whole
        entry (so no word is ever split), lower-cased, split at spaces and punctuation ("?"), with
        <bos> ... <eos> around the text and <pad> on the right. One difference: a word outside the
        vocabulary becomes <pad> (WordPiece needs an unknown token) where this class raises."""
        vocab = {w: i for i, w in enumerate(self.vocab)}
        special = [dict(id=vocab[t], content=t, single_word=False, lstrip=False, rstrip=False, normalized=False,
                        special=True) for t in (PAD, BOS, EOS)]
        a, bos, eos = {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": BOS, "type_id": 0}}, \
            {"SpecialToken": {"id": EOS, "type_id": 0}}
        spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
                "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "BertPreTokenizer"},
                "post_processor": {"type": "TemplateProcessing", "single": [bos, a, eos], "pair": [bos, a, eos],
                                   "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in (BOS, EOS)}},
                "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
                "model": {"type": "WordPiece", "unk_token": PAD, "continuing_subword_prefix": "##",
                          "max_input_chars_per_word": 100, "vocab": vocab}}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
                  "unk_token": PAD, "model_max_length": self.max_length, "padding_side": "right",
                  "clean_up_tokenization_spaces": True}
        folder = Path(folder)
        (folder / "tokenizer.json").write_text(json.dumps(spec) + "\n")
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
        return folder

    def __call__(self, texts, max_length=None, padding="longest"):
        """Texts -> {"input_ids", "attention_mask"}: (B, L) long tensors, padded on the right with <pad>.

        padding="longest" pads to the longest text; "max_length" to max_length (SigLIP's habit: its
        text tower pools the LAST position, so every text must end at the same place)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        max_length = max_length or self.max_length
        rows = [self.encode(t) for t in texts]
        too_long = [t for t, r in zip(texts, rows) if len(r) > max_length]
        if too_long:
            raise ValueError(f"{too_long[0]!r} has {len(self.encode(too_long[0]))} tokens with <bos>/<eos>, "
                             f"more than max_length={max_length}")
        if padding == "longest":
            length = max(len(r) for r in rows)
        elif padding == "max_length":
            length = max_length
        else:
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)  # (B, L)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for b, r in enumerate(rows):
            input_ids[b, :len(r)] = torch.tensor(r)
            attention_mask[b, :len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}
