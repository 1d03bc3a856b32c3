"""BPE's merge loop: the priority-queue merge equals the textbook rescan on random words and merge
lists, the spans it returns cover the word, and a SentencePiece-style vocabulary (pieces hold "▁"
only in front, so lines split into words before BPE) gives transformers' ids."""
import json
import random

import pytest

import weights_convert
from minivlm.processing.bpe import BPE
from test_tokenizer_json import CORPUS, TEXTS, random_texts
from tokenizer_checks import assert_encode_decode_equal_hf

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def random_bpe(rng, alphabet="ab▁c", n_merges=40, **options):
    """Random merges over a small alphabet (ranks in random order, so odd tie-breaks happen)."""
    vocab, merges = {c: i for i, c in enumerate(alphabet)}, []
    while len(merges) < n_merges:
        a, b = rng.choice(list(vocab)), rng.choice(list(vocab))
        if (a, b) not in merges and len(a + b) <= 6:
            merges.append((a, b))
            vocab.setdefault(a + b, len(vocab))
    return BPE(vocab, merges, **options)


@pytest.mark.parametrize("seed", range(6))
def test_heap_merge_equals_rescan(seed):
    rng = random.Random(seed)
    bpe = random_bpe(rng, byte_fallback=seed % 2 == 0, unk_token="<unk>", fuse_unk=seed % 3 == 0)
    bpe.vocab.update({f"<0x{b:02X}>": 1000 + b for b in range(256)} if seed % 2 == 0 else {"<unk>": 999})
    for _ in range(300):
        word = "".join(rng.choice("ab▁cé") for _ in range(rng.randint(1, 30)))
        symbols = bpe.initial_symbols(word)
        fast, slow = bpe.merge(symbols), bpe.merge_by_rescan(symbols)
        assert fast == slow, word
        # the spans tile the word, in order
        assert fast[0][1] == 0 and fast[-1][2] == len(word)
        assert all(x[2] == y[1] or x[1:3] == y[1:3] for x, y in zip(fast, fast[1:]))


def test_split_before_space_is_used_only_when_exact():
    assert BPE({"▁": 0, "a": 1, "▁a": 2}, [("▁", "a")]).split_before_space
    assert not BPE({"▁": 0, "a": 1, "a▁": 2}, [("a", "▁")]).split_before_space    # a piece crosses a word end
    assert not BPE({"▁": 0, "a": 1}, [], end_of_word_suffix="</w>").split_before_space
    rng = random.Random(7)
    for _ in range(20):
        bpe = random_bpe(rng, n_merges=30)
        for _ in range(50):
            word = "".join(rng.choice("ab▁c") for _ in range(rng.randint(1, 25)))
            expected = [t for t, *_ in bpe.merge_by_rescan(bpe.initial_symbols(word))]
            assert bpe.tokenize(word) == expected, (word, bpe.split_before_space)


@pytest.fixture(scope="module")
def sentencepiece_style(tmp_path_factory):
    """A Llama 2 style folder trained on "▁"-led words (as SentencePiece trains), read as LlamaTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    tk = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=500, show_progress=False, special_tokens=specials))
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    folder = tmp_path_factory.mktemp("spm_style")
    tk.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return folder


def test_sentencepiece_style_equal_hf(sentencepiece_style):
    hf = transformers.AutoTokenizer.from_pretrained(sentencepiece_style)
    ours = weights_convert.load_tokenizer(sentencepiece_style)
    assert ours.model.split_before_space
    assert_encode_decode_equal_hf(hf, ours, TEXTS + random_texts(100) + CORPUS[:6] + ["▁a▁▁b▁▁▁c ▁ x▁"])
