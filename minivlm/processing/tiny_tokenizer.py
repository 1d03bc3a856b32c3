"""A LLaMA-2-style character tokenizer written in code: the tokenizer of every tiny model minivlm
builds (the traces' seeded defaults, the shipped shapes-llava, the training recipes' tests).

Why not a small trained BPE? Training one needs the `tokenizers` package at run time, and a
vocabulary file would be a blob to ship; a character vocabulary with byte fallback is ~360 lines of
data made by a loop, loads through the same `weights_convert.load_tokenizer` as a real checkpoint,
and is read identically by transformers. It makes every character one token, which is also the
easiest sequence to read in a trace.
"""
import json
import string
from pathlib import Path

SPECIALS = ["<unk>", "<s>", "</s>"]
ADDED = ["<image>", "<pad>"]


def tiny_vocabulary() -> dict:
    """<unk> <s> </s>, the 256 byte-fallback tokens <0xNN>, "▁" (the space) and every printable ASCII
    character. No merges: one token per character, and anything else (a newline, "é") falls back to
    its UTF-8 bytes. Added tokens (<image>, <pad> ...) come after."""
    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + ["▁"]
    tokens += [c for c in string.printable if c not in string.whitespace]
    return {t: i for i, t in enumerate(tokens)}


def added_token_ids(added_tokens=ADDED) -> dict:
    """{token: id} of the added tokens, numbered after the vocabulary in the order given."""
    base = len(tiny_vocabulary())
    return {t: base + i for i, t in enumerate(added_tokens)}


def _entry(token_id, token):
    return {"id": token_id, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def write_tiny_tokenizer(folder, added_tokens=ADDED) -> int:
    """tokenizer.json + tokenizer_config.json, the files a Llama 2 checkpoint carries; added_tokens
    (special, after the vocabulary) are the model's placeholders and padding. Returns the vocab size."""
    vocab = tiny_vocabulary()
    added = [_entry(vocab[t], t) for t in SPECIALS] + [_entry(i, t) for t, i in added_token_ids(added_tokens).items()]
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "pad_token": "<pad>", "add_bos_token": True, "add_eos_token": False, "legacy": False, "padding_side": "left", "model_max_length": 512,
              "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added}}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return len(vocab) + len(added_tokens)
