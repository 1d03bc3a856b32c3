"""The SentencePiece Unigram tokenizer by hand (minivlm/processing/unigram.py) and SigLIP's wrapper
around it, against the `sentencepiece` package and transformers' SiglipTokenizer, on Unigram models
trained here (offline, in a fraction of a second) with different normalisation rules, over texts
with unicode, compatibility characters, unknown characters, punctuation and whitespace runs."""
import random

import pytest

import weights_convert
from minivlm.processing.siglip_tokenizer import SiglipTokenizer, canonicalize
from minivlm.processing.unigram import UnigramModel, read_sentencepiece_model

spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

WORDS = ("a the photo of cat dog red blue green circle square triangle two three small large on in playing snow "
         "café naïve Ünïcödé wörds 日本語 テキスト 😀 — numbers 3.14 12345 straße ﬁ ＡＢＣ ① ｶﾀｶﾅ").split()
EXTRA = ["", " ", "\u2581x", "A </s> b", "</s>hello", "hi<unk>", "😀😀 abc 😀", "Hello, World!!", "xxx", "㍻ ＡＢＣ",
         "tab\tand\nnewline  runs   here ", "🦜🦜🦜 unseen 🦜"]


def texts(seed, n):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        gaps = [rng.choice([" ", " ", " ", "  ", "\t", "\n", "   "]) for _ in range(9)]
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 9))]
        out.append(rng.choice(["", " ", "  "]) + "".join(w + g for w, g in zip(words, gaps))
                   + rng.choice(["", "!", ".", " ?"]))
    return out


# name -> trainer settings: SigLIP's (nmt_nfkc, no dummy prefix), the common default, no normalisation.
RULES = {
    "nmt_nfkc-siglip-like": dict(normalization_rule_name="nmt_nfkc", add_dummy_prefix=False),
    "nmt_nfkc-dummy-prefix": dict(normalization_rule_name="nmt_nfkc", add_dummy_prefix=True),
    "identity-keep-whitespace": dict(normalization_rule_name="identity", add_dummy_prefix=True,
                                     remove_extra_whitespaces=False),
    "nfkc_cf": dict(normalization_rule_name="nfkc_cf", add_dummy_prefix=False),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unigram")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(texts(0, 2000)), encoding="utf-8")
    out = {}
    for name, rule in RULES.items():
        prefix = str(folder / name)
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=prefix, vocab_size=100, model_type="unigram",
                                       pad_id=-1, unk_id=2, eos_id=1, bos_id=-1, character_coverage=0.98,
                                       hard_vocab_limit=False, minloglevel=2, **rule)
        out[name] = prefix + ".model"
    return out


@pytest.mark.parametrize("name", RULES)
def test_unigram_equals_sentencepiece(models, name):
    """Pieces, ids and decoded text equal sentencepiece's own, for every text."""
    sp = spm.SentencePieceProcessor(model_file=models[name])
    ours = UnigramModel(read_sentencepiece_model(models[name]))
    assert len(ours.vocab) == sp.get_piece_size()
    for text in texts(1, 300) + EXTRA:
        pieces = sp.encode(text, out_type=str)
        assert [p for p, _ in ours.encode(text)] == pieces, text
        assert [i for _, i in ours.encode(text)] == sp.encode(text), text
        assert ours.decode(pieces) == sp.decode_pieces(pieces), text


@pytest.mark.parametrize("name", ["nmt_nfkc-siglip-like", "nfkc_cf"])
def test_siglip_tokenizer_equals_hf(models, name, tmp_path):
    """load_tokenizer on a folder SiglipTokenizer saved (spiece.model + tokenizer_config.json): ids,
    decoded text (with and without special tokens) and SigLIP's max_length padding equal HF's."""
    transformers.SiglipTokenizer(models[name]).save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = weights_convert.load_tokenizer(tmp_path)
    assert isinstance(ours, SiglipTokenizer)
    samples = texts(2, 200) + EXTRA
    for text in samples:
        ids = hf(text).input_ids
        assert ours.encode(text) == ids, text
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text
    # SiglipProcessor's convention: pad with </s> to 64, truncating longer prompts
    long = " ".join(samples)
    batch = samples[:6] + [long]
    want = hf(batch, padding="max_length", max_length=64, truncation=True)
    got = ours(batch, padding="max_length", max_length=64, truncation=True)
    assert got.input_ids == want.input_ids and got.attention_mask == want.attention_mask


def test_canonicalize_by_hand():
    assert canonicalize("  A Photo,  of\ta CAT!! ") == "a photo of a cat"
    assert canonicalize("Keep Case", do_lower_case=False) == "Keep Case"


def test_bad_model_files_are_refused(models, tmp_path):
    bad = tmp_path / "spiece.model"
    bad.write_bytes(b"\x07\x07\x07")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "SiglipTokenizer"}')
    with pytest.raises(weights_convert.errors.CheckpointError, match="spiece.model"):
        weights_convert.load_tokenizer(tmp_path)
    bpe = str(tmp_path / "bpe")
    corpus = str(models["nfkc_cf"]).rsplit("/", 1)[0] + "/corpus.txt"
    spm.SentencePieceTrainer.train(input=corpus, model_prefix=bpe, vocab_size=100, model_type="bpe", minloglevel=2,
                                   hard_vocab_limit=False)
    with pytest.raises(ValueError, match="only Unigram models are implemented"):
        UnigramModel(read_sentencepiece_model(bpe + ".model"))
