"""OPT's tokenizer (HF GPT2Tokenizer: byte-level BPE) against transformers, on folders made offline.

A small byte-level BPE is trained here with the `tokenizers` package and saved as vocab.json +
merges.txt with an OPT-style tokenizer_config.json (</s> as bos/eos/unk, <pad>, add_bos_token), and
again as transformers 5's save_pretrained writes it (tokenizer.json). A second folder keeps GPT-2's
own defaults (<|endoftext|>, no bos) and add_prefix_space.
"""
import json

import pytest

import weights_convert
from test_tokenizer_clip import CORPUS, TEXTS, random_texts
from tokenizer_checks import BATCH_SETTINGS, assert_batch_equal_hf, assert_encode_decode_equal_hf

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

OPT_CONFIG = {"tokenizer_class": "GPT2Tokenizer", "add_bos_token": True, "add_prefix_space": False,
              "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>",
              "model_max_length": 12}
GPT2_CONFIG = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": True, "model_max_length": 12}


def train_byte_level(folder, specials):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=420, show_progress=False, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.model.save(str(folder))


@pytest.fixture(scope="module")
def gpt2_dirs(tmp_path_factory):
    """(OPT-style vocab.json + merges.txt, the same saved by transformers 5, GPT-2 defaults)."""
    opt = tmp_path_factory.mktemp("opt_files")
    train_byte_level(opt, ["<s>", "<pad>", "</s>", "<unk>"])
    (opt / "tokenizer_config.json").write_text(json.dumps(OPT_CONFIG))
    saved = tmp_path_factory.mktemp("opt_saved")
    transformers.AutoTokenizer.from_pretrained(opt).save_pretrained(saved)
    assert (saved / "tokenizer.json").is_file()
    gpt2 = tmp_path_factory.mktemp("gpt2_files")
    train_byte_level(gpt2, ["<|endoftext|>"])
    (gpt2 / "tokenizer_config.json").write_text(json.dumps(GPT2_CONFIG))
    return opt, saved, gpt2


@pytest.mark.parametrize("which", [0, 1, 2], ids=["opt_vocab_merges", "opt_tokenizer_json", "gpt2_prefix_space"])
def test_encode_decode_equal_hf(gpt2_dirs, which):
    folder = gpt2_dirs[which]
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(hf).__name__ == "GPT2Tokenizer"
    ours = weights_convert.load_tokenizer(folder)
    assert_encode_decode_equal_hf(hf, ours, TEXTS + ["</s>a photo of</s> <pad>x", "Question: what colour? Answer:"] + random_texts())


def test_opt_rules_by_hand(gpt2_dirs):
    """OPT puts </s> (its bos) first and nothing at the end; a space is glued to the word after it."""
    ours = weights_convert.load_tokenizer(gpt2_dirs[0])
    ids = ours.encode("hello world")
    assert ids[0] == ours.token_to_id("</s>") == ours.bos_token_id and ids[-1] != ours.eos_token_id
    assert ours.tokenize(" world")[0].startswith("Ġ")  # GPT-2's byte for the space, U+0120
    assert ours.decode(ids, skip_special_tokens=True) == "hello world"


@pytest.mark.parametrize("kwargs", BATCH_SETTINGS)
def test_batch_padding_truncation_equal_hf(gpt2_dirs, kwargs):
    hf = transformers.AutoTokenizer.from_pretrained(gpt2_dirs[0])
    ours = weights_convert.load_tokenizer(gpt2_dirs[0])
    assert_batch_equal_hf(hf, ours, ["Hello world!", "a photo of a red circle and a blue square and more words",
                                     "東京 😀", ""], kwargs)


def test_blip2_image_token(gpt2_dirs, tmp_path):
    """BLIP-2's tokenizer is OPT's plus an added special <image>; the processor writes it num_query_tokens
    times before the text, tokenized without special tokens, then the text with </s> first."""
    hf = transformers.AutoTokenizer.from_pretrained(gpt2_dirs[0])
    hf.add_special_tokens({"additional_special_tokens": ["<image>"]})
    hf.save_pretrained(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = weights_convert.load_tokenizer(tmp_path)
    image_id = hf.convert_tokens_to_ids("<image>")
    for text in ("<image>" * 4, "<image><image>a photo of", "Question: what is <image>? Answer:"):
        assert ours.encode(text, add_special_tokens=False) == hf(text, add_special_tokens=False).input_ids
        assert ours.encode(text) == hf(text).input_ids
    assert ours.encode("<image>" * 4, add_special_tokens=False) == [image_id] * 4
    assert ours.decode([image_id, 5], skip_special_tokens=True) == hf.decode([image_id, 5], skip_special_tokens=True)
