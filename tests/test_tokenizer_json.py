"""tokenizer.json tokenizers against transformers: Llama 3's byte-level BPE and Llama 2's
SentencePiece-style BPE (Metaspace, byte fallback), with added/special tokens and bos.

Every tokenizer is trained here with the `tokenizers` package, offline, and saved the ways they
reach users: Llama 3 as PreTrainedTokenizerFast; Llama 2 as the hub writes it (normalizer
Prepend + Replace, tokenizer_class LlamaTokenizer, legacy true and false), as transformers 5
re-saves it (Metaspace), and the hub file read as a plain PreTrainedTokenizerFast.
"""
import json
import random
import shutil

import pytest
import torch

import weights_convert
from minivlm.processing.decoding import byte_fallback_decoder
from minivlm.processing.pretokenize import LLAMA3_PATTERN, metaspace
from weights_convert.errors import CheckpointError

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

CORPUS = ["Hello world! The quick brown fox jumps over the lazy dog.", "café naïve résumé 東京 日本語 😀🚀 Ünïcödé",
          "  spaces   and\nnewlines\n\n\tTabs  ", "don't you'll I'm we've they're 12345 3.14 1,000,000",
          "def f(x):\n    return x ** 2  # comment", "HELLO Hello hello hElLo"] * 30
TEXTS = ["Hello world!", "Café   NAÏVE\n\nx", "東京 😀 unseenword zzz", "", " ", "  leading", "trailing  ",
         "a\n\n\nb\r\nc\td", "don't DON'T we'Ve", "12345678 3.14159", "unk: ∑∫√ Ω ß ﬁ", "e\u0301 é", "x" * 40,
         "\u00a0nbsp\u3000ideo\u2028ls", "emoji 👩‍👩‍👧 flags 🇫🇷",
         # special tokens inside text, at the start, after spaces, next to each other
         "<s>hello</s> <s> x", "mixed<s>in</s>line", "  <s>  spaced  </s>  ", "<unk>",
         "<|begin_of_text|>hi<|eot_id|>\n<|東京|>x", "<|eot_id|><|eot_id|>  <|end_of_text|>",
         "a    <mask>x <mask>", "foo foobar barfoo foo_x (foo)", "bar   x  bar\n\nbar", "Hello HelloHello"]


def random_texts(n=150, seed=0):
    rng, alphabet = random.Random(seed), "ab cdeé東😀\n\t'!.1<>s/|∑"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(n)]


def llama3_dir(root):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|東京|>"]
    tk = Tokenizer(models.BPE(ignore_merges=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, show_progress=False, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bos = ("<|begin_of_text|>", tk.token_to_id("<|begin_of_text|>"))
    tk.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1", special_tokens=[bos])])
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|begin_of_text|>",
                                              eos_token="<|end_of_text|>")
    # added tokens with every matching option: lstrip, single_word, rstrip, normalized
    hf.add_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False),
                   AddedToken("foo", single_word=True, normalized=False), AddedToken("bar", rstrip=True, normalized=False),
                   AddedToken("Hello", normalized=True)])
    hf.save_pretrained(root / "llama3")
    return root / "llama3"


def llama2_dirs(root, legacy):
    """(hub layout, transformers-5 re-save, hub file as PreTrainedTokenizerFast)."""
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    trained = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    trained.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                                            special_tokens=["<unk>", "<s>", "</s>"] + bytes_))
    model = json.loads(trained.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # Rebuilt so the <0xNN> are ordinary vocabulary entries, as in Llama 2, not added tokens.
    tk = Tokenizer(models.BPE(vocab=model["vocab"], merges=merges, byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tk.normalizer = trained.normalizer
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    hub = root / f"llama2_legacy{legacy}"
    hub.mkdir()
    tk.save(str(hub / "tokenizer.json"))
    names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (hub / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                                                           "add_eos_token": False, "legacy": legacy, **names}))
    saved = root / f"llama2_legacy{legacy}_saved"
    transformers.AutoTokenizer.from_pretrained(hub).save_pretrained(saved)
    generic = root / f"llama2_legacy{legacy}_generic"
    generic.mkdir()
    shutil.copy(hub / "tokenizer.json", generic)
    (generic / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", **names}))
    return hub, saved, generic


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizer_json")
    out = {"llama3": llama3_dir(root)}
    for legacy in (False, True):
        hub, saved, generic = llama2_dirs(root, legacy)
        out |= {f"llama2_legacy{legacy}": hub, f"llama2_legacy{legacy}_saved": saved,
                f"llama2_legacy{legacy}_generic": generic}
    return out


NAMES = ["llama3", "llama2_legacyFalse", "llama2_legacyFalse_saved", "llama2_legacyFalse_generic",
         "llama2_legacyTrue", "llama2_legacyTrue_saved", "llama2_legacyTrue_generic"]


@pytest.mark.parametrize("name", NAMES)
def test_encode_decode_equal_hf(dirs, name):
    hf = transformers.AutoTokenizer.from_pretrained(dirs[name])
    ours = weights_convert.load_tokenizer(dirs[name])
    for text in TEXTS + random_texts():
        ids = hf(text).input_ids
        assert ours.encode(text) == ids, text
        assert ours.encode(text, add_special_tokens=False) == hf(text, add_special_tokens=False).input_ids, text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text
    for text in TEXTS:
        ids = hf(text).input_ids
        for k in range(len(ids)):  # cut anywhere: inside multi-byte characters and byte-fallback runs
            assert ours.decode(ids[:k]) == hf.decode(ids[:k]), (text, k)
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, ours.unk_token_id) == \
           (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.unk_token_id)
    assert ours.padding_side == hf.padding_side


def test_the_corners_differ(dirs):
    """The fixtures really exercise the corners: legacy prefixes '▁' after a special token, and the
    hub normaliser doubles a leading space where Metaspace does not."""
    enc = {name: weights_convert.load_tokenizer(dirs[name]).tokenize for name in NAMES}
    assert enc["llama2_legacyFalse"]("<s>hi")[1] != "▁"
    assert enc["llama2_legacyTrue"]("<s>hi")[1].startswith("▁")
    assert enc["llama2_legacyFalse"](" hi")[0] == "▁" and enc["llama2_legacyFalse_generic"](" hi")[0] == "▁▁"
    assert "<0xE2>" in enc["llama2_legacyFalse"]("∑")  # byte fallback: ∑ is E2 88 91
    assert enc["llama3"]("<|東京|>x")[0] == "<|東京|>"


@pytest.mark.parametrize("name", ["llama3", "llama2_legacyFalse"])
@pytest.mark.parametrize("kwargs", [dict(padding=True), dict(padding=True, padding_side="right"),
                                    dict(padding="max_length", max_length=40),
                                    dict(padding=True, truncation=True, max_length=5)])
def test_batch_padding_equal_hf(dirs, name, kwargs):
    hf = transformers.AutoTokenizer.from_pretrained(dirs[name])
    ours = weights_convert.load_tokenizer(dirs[name])
    with pytest.raises(ValueError, match="pad token"):
        ours(["a", "bb"], padding=True)
    hf.pad_token, ours.pad_token = hf.eos_token, ours.eos_token
    texts = ["Hello world!", "a much longer sentence: the quick brown fox jumps", "東京 😀", ""]
    expected, got = hf(texts, return_tensors="pt", **kwargs), ours(texts, return_tensors="pt", **kwargs)
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])


def test_left_padding_by_hand(dirs):
    ours = weights_convert.load_tokenizer(dirs["llama2_legacyFalse"])  # LlamaTokenizer pads left, as HF
    ours.pad_token = ours.unk_token
    batch = ours(["hello world", "hi"], padding=True, return_tensors="pt")
    short = ours.encode("hi")
    assert batch.input_ids[1, -len(short):].tolist() == short and batch.input_ids[1, 0] == ours.pad_token_id
    assert batch.attention_mask[1].tolist() == [0] * (batch.input_ids.shape[1] - len(short)) + [1] * len(short)
    assert batch.input_ids[0, 0] == ours.bos_token_id


def test_parts_by_hand():
    first, always = metaspace(prepend_scheme="first", split=False), metaspace(prepend_scheme="always")
    assert first("a b", True) == ["▁a▁b"] and first("a b", False) == ["a▁b"]
    assert first(" a", True) == ["▁a"]  # already starts with ▁: no second one
    assert always("a b", False) == ["▁a", "▁b"]  # split: one piece per word
    assert byte_fallback_decoder(["<0xE2>", "<0x88>", "<0x91>", "x"]) == ["∑", "x"]
    assert byte_fallback_decoder(["<0xE2>", "<0x88>", "y"]) == ["\ufffd", "\ufffd", "y"]  # invalid: one per byte


def test_ignore_merges_equal_tokenizers():
    """Llama 3's ignore_merges: a word that is in the vocabulary is taken whole, even where the
    merges would not build it. Checked against the tokenizers library on a tiny hand vocabulary."""
    from minivlm.processing.bpe import BPE
    vocab, merges = {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, [("a", "b")]
    for ignore in (False, True):
        reference = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore))
        for word in ("abc", "cab", "abcab"):
            assert BPE(vocab, merges, ignore_merges=ignore).tokenize(word) == reference.encode(word).tokens
    assert BPE(vocab, merges, ignore_merges=True).tokenize("abc") == ["abc"]


def test_unsupported_files(tmp_path):
    spec = {"model": {"type": "Unigram", "vocab": [["a", 0.0]]}, "added_tokens": []}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="Unigram"):
        weights_convert.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "WhisperTokenizer"}))
    with pytest.raises(CheckpointError, match="WhisperTokenizer"):
        weights_convert.load_tokenizer(tmp_path)
