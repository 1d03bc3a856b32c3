"""The hand-written WordPiece (BERT; BLIP's text side) against transformers' BertTokenizer and
tokenizers' own components.

The vocabulary is made here, offline: a small WordPiece trained with the `tokenizers` package on a
cased corpus with accents, CJK, emoji and punctuation, written as vocab.txt. Folders are saved the
ways they reach users: transformers 5's save_pretrained of BertTokenizer (cased, uncased, uncased
keeping accents) with the hub's vocab.txt beside it; vocab.txt alone; BLIP's tokenizer ([DEC] as bos,
[ENC] extra) as transformers 5 saves it and as the hub stores it (special_tokens_map.json, no
added_tokens_decoder); a plain tokenizer.json with a WordPiece model (PreTrainedTokenizerFast).
"""
import json
import random
import shutil
import unicodedata

import pytest

import weights_convert
from tokenizer_checks import BATCH_SETTINGS, assert_batch_equal_hf
from minivlm.processing.wordpiece import (WordPiece, bert_normalizer, bert_pre_tokenizer, read_vocab_txt,
                                         wordpiece_decoder)
from weights_convert.errors import CheckpointError, MissingConfigError

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CORPUS = ["Hello world! The quick brown fox jumps over the lazy dog.", "café naïve résumé Ünïcödé ÉCOLE école",
          "東京 日本語 中文字符 😀🚀", "don't you'll I'm we've they're 12345 3.14 1,000,000",
          "a photo of a red circle; a blue square (big) and [small] things?!", "HELLO Hello hello hElLo",
          "unaffable playing played player replay worldwide"] * 30
TEXTS = ["Hello world!", "a photo of a red circle", "Café   NAÏVE\n\nécole", "東京 😀 unseenword zzz 日本x中",
         "", " ", "  leading", "trailing  ", "a\n\n\nb\r\nc\td\u00a0e\u3000f\u2028g", "don't DON'T we'Ve , . ? !",
         "12345678 3.14159 $5+3=8 a<b>c ^_^ `x` |y| ~z", "unk: ∑∫√ Ω ß ﬁ ΣΑΣ İstanbul", "e\u0301 é E\u0301",
         "x" * 100, "x" * 101, "Unaffable" * 12, "ctrl\x00\x07\u200b\ufffd\u200dchars", "emoji 👩‍👩‍👧 flags 🇫🇷",
         # special tokens in the text: matched as written (not normalised), lower case is plain text
         "[CLS] hello [SEP]", "x[SEP]y[MASK]", "[mask] [Cls] [UNK]", "[DEC] a caption [ENC]x", "  [PAD]  [PAD]",
         "«quotes» „low“ — dash… ¿qué? ¡sí!", "playing replayed worldwide unaffable"]


def random_texts(n=150, seed=0):
    rng = random.Random(seed)
    alphabet = list("ab cdeéÉ東京😀\n\t'!.,1AZü-") + ["\u0301", "ing ", "play", "[SEP]", "##", "Hello"]
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) for _ in range(n)]


def train_vocab(folder):
    """A WordPiece vocabulary trained on the cased corpus, written as vocab.txt."""
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # Lower-case and accent-stripped pieces too, so every folder's normaliser finds real words.
    corpus = CORPUS + [unicodedata.normalize("NFD", t.lower()) for t in CORPUS]
    tk.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=450, show_progress=False,
                                                             special_tokens=SPECIALS))
    tk.model.save(str(folder))
    return tk


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("wordpiece")
    trained = train_vocab(root)
    vocab_txt, out = root / "vocab.txt", {}

    def save(name, tokenizer, with_vocab_txt=True):
        tokenizer.save_pretrained(root / name)
        if with_vocab_txt:  # transformers 5 writes only tokenizer.json; hub folders also carry vocab.txt
            shutil.copy(vocab_txt, root / name / "vocab.txt")
        out[name] = root / name

    save("uncased", transformers.BertTokenizer(str(vocab_txt)))
    save("cased", transformers.BertTokenizer(str(vocab_txt), do_lower_case=False, clean_up_tokenization_spaces=True))
    save("uncased_accents_no_cjk", transformers.BertTokenizer(str(vocab_txt), strip_accents=False,
                                                              tokenize_chinese_chars=False))
    save("vocab_txt_only", transformers.BertTokenizer(str(vocab_txt), do_lower_case=False))
    (out["vocab_txt_only"] / "tokenizer.json").unlink()

    # BLIP: bert-base-uncased plus bos [DEC] and an extra special [ENC] (as BLIP's init_tokenizer does).
    blip = transformers.BertTokenizer(str(vocab_txt), model_max_length=12)
    blip.add_special_tokens({"bos_token": "[DEC]"})
    blip.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    save("blip", blip)
    # ... and the hub's layout of Salesforce/blip-*: an older tokenizer_config.json without
    # added_tokens_decoder, the special tokens in special_tokens_map.json.
    hub = root / "blip_hub"
    shutil.copytree(out["blip"], hub)
    (hub / "tokenizer_config.json").write_text(json.dumps({
        "cls_token": "[CLS]", "do_basic_tokenize": True, "do_lower_case": True, "mask_token": "[MASK]",
        "model_max_length": 512, "never_split": None, "pad_token": "[PAD]", "processor_class": "BlipProcessor",
        "sep_token": "[SEP]", "strip_accents": None, "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]"}))
    (hub / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "[DEC]", "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
        "unk_token": "[UNK]", "additional_special_tokens": ["[ENC]"]}))
    out["blip_hub"] = hub

    # A tokenizer.json read as is: other normaliser flags, BertProcessing, a decoder without cleanup.
    tk = Tokenizer(models.WordPiece(trained.get_vocab(), unk_token="[UNK]", max_input_chars_per_word=12))
    tk.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=True, handle_chinese_chars=False)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece(cleanup=False)
    tk.post_processor = processors.BertProcessing(("[SEP]", trained.token_to_id("[SEP]")),
                                                  ("[CLS]", trained.token_to_id("[CLS]")))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]")
    fast.add_special_tokens({"cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"})
    save("generic_json", fast, with_vocab_txt=False)
    return out


HF_CLASS = {"uncased": "BertTokenizer", "cased": "BertTokenizer", "uncased_accents_no_cjk": "BertTokenizer",
            "vocab_txt_only": "BertTokenizer", "blip": "BertTokenizer", "blip_hub": "BertTokenizer",
            "generic_json": "TokenizersBackend"}


@pytest.mark.parametrize("name", list(HF_CLASS))
def test_encode_decode_equal_hf(dirs, name):
    hf = transformers.AutoTokenizer.from_pretrained(dirs[name])
    assert type(hf).__name__ == HF_CLASS[name]
    ours = weights_convert.load_tokenizer(dirs[name])
    n_multi = 0
    for text in TEXTS + random_texts():
        ids = hf(text).input_ids
        assert ours.encode(text) == ids, text
        assert ours.encode(text, add_special_tokens=False) == hf(text, add_special_tokens=False).input_ids, text
        n_multi += any(t.startswith("##") for t in hf.convert_ids_to_tokens(ids))
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text
        for k in range(1, len(ids), 3):
            assert ours.decode(ids[k:]) == hf.decode(ids[k:])  # starting inside a word: "##x" kept as is
    assert n_multi > 20  # the texts really exercise word pieces
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(ours, attr) == getattr(hf, attr), attr
    assert len(ours) == len(hf)


def test_blip_tokens(dirs):
    """BLIP's extra tokens: [DEC] is bos (the model writes it over [CLS] itself), [ENC] one token."""
    for name in ("blip", "blip_hub"):
        hf = transformers.AutoTokenizer.from_pretrained(dirs[name])
        ours = weights_convert.load_tokenizer(dirs[name])
        assert ours.bos_token == "[DEC]" and ours.bos_token_id == hf.bos_token_id == hf.convert_tokens_to_ids("[DEC]")
        ids = ours.encode("[ENC] a dog")
        assert ids[1] == hf.convert_tokens_to_ids("[ENC]") and ids[0] == hf.cls_token_id and ids[-1] == hf.sep_token_id
    assert weights_convert.load_tokenizer(dirs["blip_hub"]).model_max_length == 512


@pytest.mark.parametrize("kwargs", BATCH_SETTINGS)
def test_batch_padding_truncation_equal_hf(dirs, kwargs):
    hf = transformers.AutoTokenizer.from_pretrained(dirs["blip"])
    ours = weights_convert.load_tokenizer(dirs["blip"])
    assert_batch_equal_hf(hf, ours, ["Hello world!", "a photo of a red circle and a blue square and more unaffable words", "東京 😀", ""], kwargs)


def test_add_bos_eos_flags_do_not_replace_cls_sep(dirs, tmp_path):
    """add_bos_token / add_eos_token in tokenizer_config.json rebuild other classes' templates from
    bos/eos; BertTokenizer sets [CLS] A [SEP] last, so they change nothing there."""
    shutil.copytree(dirs["blip"], tmp_path / "flags")
    config = json.loads((tmp_path / "flags" / "tokenizer_config.json").read_text())
    flags = {"add_bos_token": True, "add_eos_token": True, "eos_token": "[ENC]"}
    (tmp_path / "flags" / "tokenizer_config.json").write_text(json.dumps(config | flags))
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "flags")
    ours = weights_convert.load_tokenizer(tmp_path / "flags")
    for text in ("a dog", "", "[SEP] x"):
        assert ours.encode(text) == hf(text).input_ids


# --- the parts against tokenizers' own components ------------------------------------------

def stable_characters():
    """Every code point assigned in Unicode 3.2 whose category has not changed since (Python's
    unicodedata is Unicode 14; tokenizers' Rust tables are other versions, which differ on newer ones)."""
    old = unicodedata.ucd_3_2_0
    return [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp < 0xE000
            and old.category(chr(cp)) != "Cn" and old.category(chr(cp)) == unicodedata.category(chr(cp))]


@pytest.fixture(scope="module")
def all_text():
    return "a".join(stable_characters())  # ~230,000 characters, each between letters


@pytest.mark.parametrize("flags", [(True, True, None, True), (True, True, True, False), (False, False, False, True)])
def test_bert_normalizer_every_character(all_text, flags):
    assert bert_normalizer(*flags)(all_text) == normalizers.BertNormalizer(*flags).normalize_str(all_text)


def test_bert_normalizer_texts_and_unassigned():
    """Whole texts (context rules: str.lower's final sigma is not BERT's, NFD reordering) and code
    points unassigned in Unicode 14, which clean_text keeps (only Cc, Cf, Co are control)."""
    texts = "\n".join(TEXTS + random_texts() + ["ΟΔΟΣ ΣΑΣ, Σ.", "\U000E0001tag\U000F0000private"])
    for flags in [(True, True, None, True), (True, False, False, True), (True, True, True, False)]:
        assert bert_normalizer(*flags)(texts) == normalizers.BertNormalizer(*flags).normalize_str(texts)
    unassigned = "a".join(chr(cp) for cp in range(0x378, 0x30000) if unicodedata.category(chr(cp)) == "Cn"
                          and not 0xD800 <= cp < 0xE000)
    assert bert_normalizer(True, True, False, False)(unassigned) == \
        normalizers.BertNormalizer(True, True, False, False).normalize_str(unassigned)


def test_wordpiece_decoder_against_tokenizers():
    """Each token is cleaned up on its own (tokenizers' rule), so "don ' t" stays apart while an
    added token "do not" becomes "don't"."""
    pool = ["hello", "##s", "##'", ".", ",", "?", "!", "'", "n't", "'m", "'s", "'ve", "'re", "do not", "[CLS]", "##"]
    rng = random.Random(0)
    for cleanup in (True, False):
        reference = decoders.WordPiece(cleanup=cleanup)
        for _ in range(300):
            tokens = [rng.choice(pool) for _ in range(rng.randint(0, 8))]
            assert "".join(wordpiece_decoder("##", cleanup)(tokens)) == reference.decode(tokens), tokens


def test_bert_pre_tokenizer_every_character(all_text):
    expected = [piece for piece, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(all_text)]
    assert bert_pre_tokenizer(all_text) == expected


def test_wordpiece_by_hand_and_against_tokenizers():
    vocab = {t: i for i, t in enumerate(["[UNK]", "un", "##aff", "##able", "a", "##a", "ba", "##na", "é", "##é"])}
    assert WordPiece(vocab).tokenize("unaffable") == ["un", "##aff", "##able"]  # Devlin et al.'s example
    ours = WordPiece(vocab, max_input_chars_per_word=6)
    assert ours.tokenize("banana") == ["ba", "##na", "##na"]  # greedy longest match from the left
    assert ours.tokenize("nanana") == ["[UNK]"]  # "na" may only continue a word
    assert ours.tokenize("aaaaaa") == ["a"] + ["##a"] * 5 and ours.tokenize("aaaaaaa") == ["[UNK]"]  # > 6 characters
    assert ours.tokenize("éé") == ["é", "##é"] and ours.tokenize("aéx") == ["[UNK]"]  # one gap: the whole word
    reference = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=6)
    rng = random.Random(0)
    for _ in range(300):
        word = "".join(rng.choice(["a", "un", "aff", "able", "ba", "na", "é", "x"]) for _ in range(rng.randint(1, 5)))
        assert ours.tokenize(word) == [t.value for t in reference.tokenize(word)], word
    with pytest.raises(ValueError, match="unk_token"):
        WordPiece({"a": 0})


def test_read_vocab_txt_like_tokenizers(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[UNK]\nhello  \r\nwo\u2028rld\n\u00a0x\u00a0\ndup\nsep\x1c\n\n##a\ndup\nlast", encoding="utf-8")
    assert read_vocab_txt(path) == models.WordPiece.read_file(str(path))


def test_errors(dirs, tmp_path):
    with pytest.raises(MissingConfigError, match="vocab.txt"):
        weights_convert.load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    (tmp_path / "vocab.json").write_text("{}")
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(MissingConfigError, match="vocab.txt or tokenizer.json"):
        weights_convert.load_tokenizer(tmp_path)
    (tmp_path / "vocab.txt").write_text("[CLS]\n[SEP]\nhello\n")  # no [UNK]
    with pytest.raises(CheckpointError, match="unk_token '\\[UNK\\]' is not in the vocabulary"):
        weights_convert.load_tokenizer(tmp_path)
