"""Tokenizer: text -> ids -> text, and batches with padding and truncation, as HF tokenizers do.

    text -> split out added/special tokens -> normalise each remaining segment -> pre-tokenise
         -> BPE each piece -> ids -> (truncate) -> add bos/eos (post-processor) -> (pad)

The parts (bpe.py, pretokenize.py, decoding.py) follow tokenizer.json's component types; how a
CLIP, Llama 2 or Llama 3 folder fills them in is weights_convert/tokenizers.py's business.
"""
from dataclasses import dataclass

import regex
import torch

from minivlm.outputs import ModelOutput

from .chat import apply_chat_template
from .offsets import tokenize_with_offsets

LARGE_INTEGER = int(1e20)  # HF's "no model_max_length" threshold


@dataclass(frozen=True)
class AddedToken:
    """A token matched in the raw text before anything else (tokenizers' AddedToken fields)."""
    content: str
    id: int
    special: bool = False
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False


def template_from_json(spec):
    """A tokenizer.json "post_processor" entry -> the single-sequence template: a list of special-token
    ids with the string "A" where the text's ids go. None (or ByteLevel only) -> ["A"]."""
    if spec is None or spec["type"] == "ByteLevel":
        return ["A"]
    kind = spec["type"]
    if kind == "Sequence":
        templates = [template_from_json(s) for s in spec["processors"]]
        templates = [t for t in templates if t != ["A"]]
        if len(templates) > 1:
            raise ValueError("a post_processor Sequence with more than one template is not supported")
        return templates[0] if templates else ["A"]
    if kind == "TemplateProcessing":
        out = []
        for item in spec["single"]:
            if "Sequence" in item:
                out.append("A")
            else:
                out.extend(spec["special_tokens"][item["SpecialToken"]["id"]]["ids"])
        return out
    if kind in ("RobertaProcessing", "BertProcessing"):  # CLIP: <|startoftext|> A <|endoftext|>
        return [spec["cls"][1], "A", spec["sep"][1]]
    raise ValueError(f"tokenizer.json post_processor type {kind!r} is not supported by minivlm")


def word_char(c):
    return c.isalnum() or c == "_"


class Tokenizer:
    """HF-compatible tokenizer: `encode`, `decode`, `__call__` (padding, truncation, tensors)."""

    def __init__(self, model, normalizer, pre_tokenizer, decoder, template=("A",), added_tokens=(),
                 bos_token=None, eos_token=None, pad_token=None, unk_token=None, padding_side="right",
                 truncation_side="right", model_max_length=LARGE_INTEGER, decode_cleanup=None):
        self.model, self.normalizer, self.pre_tokenizer, self.decoder = model, normalizer, pre_tokenizer, decoder
        self.template = list(template)
        self.added = {t.content: t for t in added_tokens}
        self.id_to_added = {t.id: t for t in added_tokens}
        self.id_to_token = {i: t for t, i in model.vocab.items()}
        self._token_ids = model.vocab | {t.content: t.id for t in added_tokens}  # token_to_id, as one dict
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.model_max_length = model_max_length if model_max_length is not None else LARGE_INTEGER
        self.decode_cleanup = decode_cleanup  # CLIP: "</w>" -> " " and strip, on the decoded text
        # The folder's chat template(s): a str, or {name: template}; weights_convert.load_tokenizer reads it.
        self.chat_template = None
        # Leftmost-longest matching, like tokenizers' Aho-Corasick: longer contents first in the alternation.
        self._raw_pattern = self._pattern([t for t in added_tokens if not t.normalized])
        self._normalized_pattern = self._pattern([t for t in added_tokens if t.normalized], normalize=True)

    def _pattern(self, tokens, normalize=False):
        if not tokens:
            return None
        self._by_match = getattr(self, "_by_match", {})
        contents = []
        for t in tokens:
            content = self.normalizer(t.content) if normalize else t.content
            self._by_match[content] = t
            contents.append(content)
        return regex.compile("|".join(regex.escape(c) for c in sorted(set(contents), key=len, reverse=True)))

    # --- special token ids ----------------------------------------------------------------------
    def token_to_id(self, token):
        if token is None:
            return None
        if token in self.added:
            return self.added[token].id
        return self.model.vocab.get(token)

    bos_token_id = property(lambda self: self.token_to_id(self.bos_token))
    eos_token_id = property(lambda self: self.token_to_id(self.eos_token))
    pad_token_id = property(lambda self: self.token_to_id(self.pad_token))
    unk_token_id = property(lambda self: self.token_to_id(self.unk_token))

    @property
    def special_tokens_map(self):
        """The named special tokens that are set (what a chat template sees as bos_token, ...)."""
        names = ("bos_token", "eos_token", "unk_token", "pad_token")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def __len__(self):
        return len(set(self.id_to_token) | set(self.id_to_added))

    def convert_ids_to_tokens(self, ids):
        return [self.id_to_added[i].content if i in self.id_to_added else self.id_to_token[i] for i in ids]

    def add_special_token(self, content):
        """Add `content` as a special, unnormalised token at the next free id (HF's
        add_tokens([...], special_tokens=True), e.g. BLIP-2's <image> when a folder lacks it); its id."""
        if content in self.added:
            return self.added[content].id
        token = AddedToken(content, max([*self.id_to_token, *self.id_to_added]) + 1, special=True)
        self.added[content], self.id_to_added[token.id] = token, token
        self._raw_pattern = self._pattern([t for t in self.added.values() if not t.normalized])
        return token.id

    # --- encoding -------------------------------------------------------------------------------
    def split_added(self, text, pattern, start=0):
        """text -> [(segment, AddedToken or None, offset)], the added tokens cut out (with their
        lstrip/rstrip whitespace and single_word rule)."""
        if pattern is None:
            return [(text, None, start)] if text else []
        out, last = [], 0
        for m in pattern.finditer(text):
            token = self._by_match[m.group()]
            s, e = m.start(), m.end()
            if token.single_word and ((s > 0 and word_char(text[s - 1])) or (e < len(text) and word_char(text[e]))):
                continue
            if token.lstrip:
                while s > last and text[s - 1].isspace():
                    s -= 1
            if token.rstrip:
                while e < len(text) and text[e].isspace():
                    e += 1
            if s > last:
                out.append((text[last:s], None, start + last))
            out.append((text[s:e], token, start + s))
            last = e
        if last < len(text):
            out.append((text[last:], None, start + last))
        return out

    def tokenize(self, text):
        """text -> token strings (no bos/eos)."""
        tokens = []
        for segment, added, offset in self.split_added(text, self._raw_pattern):
            if added is not None:
                tokens.append(added.content)
                continue
            normalized = self.normalizer(segment)
            for piece, added2, offset2 in self.split_added(normalized, self._normalized_pattern, offset):
                if added2 is not None:
                    tokens.append(added2.content)
                    continue
                for word in self.pre_tokenizer(piece, offset2 == 0):
                    if word:
                        tokens.extend(self.model.tokenize(word))
        return tokens

    def tokenize_with_offsets(self, text):
        """text -> [(token, start, end)]: text[start:end] is what the token came from (offsets.py)."""
        return tokenize_with_offsets(self, text)

    def apply_chat_template(self, conversation, **kwargs):
        """Messages -> the folder's chat template -> text or ids, as transformers (chat.py)."""
        return apply_chat_template(self, conversation, **kwargs)

    def encode_raw(self, text):
        if not isinstance(text, str):
            raise TypeError(f"expected a string to encode, got {type(text).__name__}")
        ids, slow = self._token_ids, self.token_to_id  # a subclass's token_to_id decides what the dict lacks
        return [ids[t] if t in ids else slow(t) for t in self.tokenize(text)]

    def num_special_tokens(self):
        return len(self.template) - 1

    def add_special_tokens(self, ids):
        out = []
        for item in self.template:
            out.extend(ids if item == "A" else [item])
        return out

    def truncate(self, ids, max_length, add_special_tokens=True, side=None):
        room = max_length - (self.num_special_tokens() if add_special_tokens else 0)
        if room < 0:
            raise ValueError(f"max_length={max_length} leaves no room: {self.num_special_tokens()} special "
                             f"tokens are added to every sequence")
        if len(ids) <= room:
            return ids
        return ids[len(ids) - room:] if (side or self.truncation_side) == "left" else ids[:room]

    def encode(self, text, add_special_tokens=True, truncation=False, max_length=None):
        """text -> ids, like HF's `tokenizer(text).input_ids` (bos/eos as the post-processor says)."""
        ids = self.encode_raw(text)
        if truncation and max_length is not None:
            ids = self.truncate(ids, max_length, add_special_tokens)
        return self.add_special_tokens(ids) if add_special_tokens else ids

    def __call__(self, text, padding=False, truncation=None, max_length=None, return_tensors=None,
                 add_special_tokens=True, padding_side=None, truncation_side=None):
        """One string or a list -> {"input_ids", "attention_mask"}, HF's rules for the options:
        padding True/"longest" (to the batch's longest) or "max_length"; truncation True to max_length
        (or model_max_length); max_length alone also truncates (HF's legacy rule); padding_side
        "left" for generation."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if max_length is not None and padding is False and truncation is None:
            truncation = True
        pad_mode = {False: None, "do_not_pad": None, True: "longest", "longest": "longest",
                    "max_length": "max_length"}.get(padding, "bad")
        if pad_mode == "bad":
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if truncation not in (None, False, True, "longest_first", "only_first", "do_not_truncate"):
            raise ValueError(f"truncation must be a bool or 'longest_first', got {truncation!r}")
        truncate = truncation not in (None, False, "do_not_truncate")
        if max_length is None and (truncate or pad_mode == "max_length"):
            if self.model_max_length >= LARGE_INTEGER:
                truncate, pad_mode = False, (None if pad_mode == "max_length" else pad_mode)
            else:
                max_length = self.model_max_length
        if pad_mode is not None and self.pad_token_id is None:
            raise ValueError("asked to pad, but this tokenizer has no pad token: set tok.pad_token "
                             "(e.g. tok.pad_token = tok.eos_token)")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")

        ids = [self.encode_raw(t) for t in texts]
        if truncate:
            ids = [self.truncate(x, max_length, add_special_tokens, truncation_side) for x in ids]
        if add_special_tokens:
            ids = [self.add_special_tokens(x) for x in ids]
        masks = [[1] * len(x) for x in ids]
        if pad_mode is not None:
            target = max(len(x) for x in ids) if pad_mode == "longest" else max_length
            for x, m in zip(ids, masks):
                n = max(0, target - len(x))
                if side == "left":
                    x[:0], m[:0] = [self.pad_token_id] * n, [0] * n
                else:
                    x.extend([self.pad_token_id] * n)
                    m.extend([0] * n)
        if return_tensors == "pt":
            if len({len(x) for x in ids}) > 1:
                raise ValueError("sequences have different lengths; pass padding=True to make a tensor")
            return ModelOutput(input_ids=torch.tensor(ids, dtype=torch.long),
                               attention_mask=torch.tensor(masks, dtype=torch.long))
        if return_tensors is not None:
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        return ModelOutput(input_ids=ids[0] if single else ids, attention_mask=masks[0] if single else masks)

    # --- decoding -------------------------------------------------------------------------------
    def decode(self, ids, skip_special_tokens=False):
        """ids (a list, 1-D tensor or int) -> text, like HF's decode."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() > 1:
                raise ValueError(f"decode takes one sequence, got a tensor of shape {tuple(ids.shape)}; use batch_decode")
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        tokens = []
        for i in ids:
            if i in self.id_to_added:
                if not (skip_special_tokens and self.id_to_added[i].special):
                    tokens.append(self.id_to_added[i].content)
            elif i in self.id_to_token:
                tokens.append(self.id_to_token[i])
            else:
                raise ValueError(f"token id {i} is not in the vocabulary (size {len(self)})")
        text = self.decoder(tokens)
        return self.decode_cleanup(text) if self.decode_cleanup else text

    def batch_decode(self, sequences, skip_special_tokens=False):
        return [self.decode(s, skip_special_tokens) for s in sequences]
