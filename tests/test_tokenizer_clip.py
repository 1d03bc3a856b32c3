"""The hand-written byte-level BPE against transformers' CLIPTokenizer, plus the parts by hand.

The vocabulary is made here, offline: a small BPE trained with the `tokenizers` package on a
corpus with accents, CJK, emoji and odd whitespace, saved as vocab.json + merges.txt (the hub's
CLIP layout) and again by transformers 5's save_pretrained (tokenizer.json).
"""
import json
import random

import pytest

import weights_convert
from tokenizer_checks import BATCH_SETTINGS, assert_batch_equal_hf, assert_encode_decode_equal_hf
from minivlm.processing.bpe import BPE, bytes_to_unicode, byte_level
from weights_convert.errors import CheckpointError, MissingConfigError

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

CORPUS = ["Hello world! The quick brown fox jumps over the lazy dog.", "café naïve résumé 東京 日本語 😀🚀 Ünïcödé",
          "  spaces   and\nnewlines\n\n\tTabs  ", "don't you'll I'm we've they're 12345 3.14 1,000,000",
          "a photo of a red circle", "HELLO Hello hello hElLo"] * 30
TEXTS = ["Hello world!", "a photo of a red circle", "Café   NAÏVE\n\nx", "東京 😀 unseenword zzz",
         "<|startoftext|>hi<|endoftext|>", "", " ", "  leading", "trailing  ", "a\n\n\nb\r\nc\td",
         "don't DON'T we'Ve", "12345678 3.14159", "unk: ∑∫√ Ω ß ﬁ", "e\u0301 é", "x" * 40,
         "\u00a0nbsp\u3000ideo", "emoji 👩‍👩‍👧 flags 🇫🇷", "mixed<|endoftext|>in line"]


def random_texts(n=150, seed=0):
    rng, alphabet = random.Random(seed), "ab cdeé東😀\n\t'!.1<>|ÄS"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(n)]


@pytest.fixture(scope="module")
def clip_dirs(tmp_path_factory):
    """(folder with vocab.json + merges.txt, folder as transformers 5 saves it)."""
    from tokenizers import Tokenizer, models, trainers
    reference = transformers.CLIPTokenizer().backend_tokenizer
    tk = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tk.normalizer, tk.pre_tokenizer = reference.normalizer, reference.pre_tokenizer
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, show_progress=False, end_of_word_suffix="</w>",
                                                       special_tokens=["<|startoftext|>", "<|endoftext|>"]))
    files = tmp_path_factory.mktemp("clip_files")
    tk.model.save(str(files))
    (files / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 12}))
    saved = tmp_path_factory.mktemp("clip_saved")
    transformers.AutoTokenizer.from_pretrained(files).save_pretrained(saved)
    assert sorted(p.name for p in files.iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    assert (saved / "tokenizer.json").is_file()
    return files, saved


@pytest.mark.parametrize("which", [0, 1], ids=["vocab_merges", "tokenizer_json"])
def test_encode_decode_equal_hf(clip_dirs, which):
    folder = clip_dirs[which]
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(hf).__name__ == "CLIPTokenizer"
    ours = weights_convert.load_tokenizer(folder)
    assert_encode_decode_equal_hf(hf, ours, TEXTS + random_texts())


@pytest.mark.parametrize("kwargs", BATCH_SETTINGS)
def test_batch_padding_truncation_equal_hf(clip_dirs, kwargs):
    hf = transformers.AutoTokenizer.from_pretrained(clip_dirs[0])
    ours = weights_convert.load_tokenizer(clip_dirs[0])
    assert_batch_equal_hf(hf, ours, ["Hello world!", "a photo of a red circle and a blue square and more words", "東京 😀", ""], kwargs)


def test_max_length_alone_truncates_like_hf(clip_dirs):
    hf = transformers.AutoTokenizer.from_pretrained(clip_dirs[0])
    ours = weights_convert.load_tokenizer(clip_dirs[0])
    texts = ["a photo of a red circle and a blue square", "hi"]
    assert ours(texts, max_length=5)["input_ids"] == hf(texts, max_length=5)["input_ids"]
    with pytest.raises(ValueError):  # unequal lengths cannot be a tensor, in HF either
        hf(texts, max_length=5, return_tensors="pt")
    with pytest.raises(ValueError, match="padding=True"):
        ours(texts, max_length=5, return_tensors="pt")


# --- the parts by hand ---------------------------------------------------------------------

def test_bytes_to_unicode_table():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord("A")] == "A" and table[0x20] == "Ġ" and table[0x0A] == "Ċ"  # space and newline shifted
    assert not any(c.isspace() for c in table.values())
    assert byte_level("é ") == "Ã©Ġ"  # é is C3 A9 in UTF-8


def test_bpe_merges_by_hand():
    vocab = {t: i for i, t in enumerate(["a", "b", "c", "ab", "bc", "abc", "c</w>", "ab</w>", "abc</w>"])}
    merges = [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c</w>")]
    bpe = BPE(vocab, merges)
    assert bpe.tokenize("abc") == ["abc"]  # b+c first (rank 0), then a+bc
    assert bpe.tokenize("abab") == ["ab", "ab"]
    suffix = BPE(vocab, merges, end_of_word_suffix="</w>")
    assert suffix.tokenize("abc") == ["abc</w>"]  # a+b, then ab + c</w>: b+c</w> is no merge
    with pytest.raises(ValueError, match="not in the vocabulary"):
        BPE(vocab, merges).tokenize("abz")
    assert BPE(vocab | {"<unk>": 9}, merges, unk_token="<unk>", fuse_unk=True).tokenize("zzab") == ["<unk>", "ab"]


def test_clip_rules_by_hand(clip_dirs):
    ours = weights_convert.load_tokenizer(clip_dirs[0])
    # lower-cased, whitespace runs collapsed, each word ends in </w>, bos ... eos around
    assert ours.tokenize("HELLO \n\t  World") == ["hello</w>", "world</w>"]
    ids = ours.encode("hello")
    assert ids[0] == ours.bos_token_id and ids[-1] == ours.eos_token_id and len(ids) == 3
    assert ours.decode(ids, skip_special_tokens=True) == "hello"


def test_errors(clip_dirs, tmp_path):
    ours = weights_convert.load_tokenizer(clip_dirs[0])
    with pytest.raises(ValueError, match="pad"):
        ours(["a", "b c"], padding="sideways")
    with pytest.raises(ValueError, match="padding=True"):
        ours(["a", "b c d"], return_tensors="pt")
    with pytest.raises(ValueError, match="no room"):
        ours("hello world", truncation=True, max_length=1)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ours.decode([10 ** 6])
    with pytest.raises(TypeError, match="string"):
        ours.encode(42)
    with pytest.raises(MissingConfigError):
        weights_convert.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    (tmp_path / "vocab.json").write_text("{}")
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(CheckpointError, match="T5Tokenizer.*supported"):
        weights_convert.load_tokenizer(tmp_path)
