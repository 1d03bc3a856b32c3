"""Qwen2's tokenizer (HF Qwen2Tokenizer: Qwen2, Qwen2-VL, LLaVA-OneVision) against transformers, offline.

A small byte-level BPE is trained here with the `tokenizers` package (on GPT-2's pieces, so that its
merges cross what Qwen2's regex splits: multi-digit tokens, for one). It is saved
as the hub's Qwen2-VL folders hold it: vocab.json + merges.txt with the special tokens only in
tokenizer_config.json's added_tokens_decoder (ids after the vocabulary, as in the real 151643+), and
again as transformers 5's save_pretrained writes it (tokenizer.json), once under the Fast class name.
"""
import json
import random

import pytest
import torch

import weights_convert
from minivlm.processing.bpe import bytes_to_unicode
from test_tokenizer_clip import CORPUS, TEXTS, random_texts
from tokenizer_checks import BATCH_SETTINGS, assert_batch_equal_hf, assert_encode_decode_equal_hf, load_pair

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

# Qwen2-VL's added tokens, in the hub's order (<|endoftext|> first, then the chat and vision ones).
QWEN2_VL_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL-Instruct's tokenizer_config.json, less the added tokens (filled in below).
QWEN2_VL_CONFIG = {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace", "split_special_tokens": False,
                   "clean_up_tokenization_spaces": False, "padding_side": "left", "model_max_length": 12}
QWEN2_TEXTS = [
    "In 2024 there were 1234567 photos, 3.14159 and 1,000,000.", "٣٤٥ ½ ² 10x20",  # digits one by one
    "I'M HERE, don'T, You'LL, it's, 'twas, rock'n'roll", "a  b   c    \n\n  d\t\t e \r\n f\n",  # contractions, runs
    "    indented\n        code()\n", "end with spaces   ", "\n\n\n", "x\n \ny",
    "café = cafe\u0301; Å = A\u030a; ﬁ; Ｆｕｌｌ", "東京で2024年12月に 😀 世界",  # NFC composes; no NFKC
    "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
    "<|im_start|>assistant\nA cat.<|im_end|>", "text<|endoftext|>more<|endoftext|>", "<|im_end|><|im_start|>",
    "<|image_pad |> <|imstart|> <|video_pad|>x<|box_start|>(1,2),(3,4)<|box_end|>", "<think>\n</think>\n\nhi",
]


def qwen2_random_texts(n=150, seed=1):
    """Random mixes of letters, digit runs, contractions, whitespace runs and special tokens."""
    rng = random.Random(seed)
    parts = ["a", "Bc", "é", "e\u0301", "東", "😀", "0", "42", "9876", " ", "  ", "\n", "\n\n", "\t", "\r\n", "'s",
             "'LL", "!", "...", "<|im_start|>", "<|image_pad|>", "<|endoftext|>", "<|", "|>"]
    return ["".join(rng.choice(parts) for _ in range(rng.randint(0, 12))) for _ in range(n)]


def train_qwen2_bpe(folder):
    """A byte-level BPE, vocab.json + merges.txt. Trained on GPT-2's pieces (digit runs together, spaces
    glued to words), not Qwen2's, so that the vocabulary holds multi-digit tokens and merges across what
    Qwen2's regex splits apart: a pipeline that grouped digits like Llama 3 would then give other ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = CORPUS + [t for t in QWEN2_TEXTS if "<|" not in t] * 10
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=500, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tk.model.save(str(folder))
    return tk.get_vocab_size()


def write_qwen2_vl_config(folder, vocab_size, **changes):
    """tokenizer_config.json as Qwen2-VL's: the added tokens special, with ids right after the vocabulary."""
    added = {str(vocab_size + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                   "single_word": False, "special": True} for i, t in enumerate(QWEN2_VL_ADDED)}
    config = QWEN2_VL_CONFIG | {"added_tokens_decoder": added, "additional_special_tokens": QWEN2_VL_ADDED[1:]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config | changes))


@pytest.fixture(scope="module")
def qwen2_dirs(tmp_path_factory):
    """(hub layout vocab.json + merges.txt, transformers 5's save_pretrained, the same named Qwen2TokenizerFast)."""
    files = tmp_path_factory.mktemp("qwen2_files")
    write_qwen2_vl_config(files, train_qwen2_bpe(files))
    saved = tmp_path_factory.mktemp("qwen2_saved")
    transformers.AutoTokenizer.from_pretrained(files).save_pretrained(saved)
    assert sorted(p.name for p in saved.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    fast = tmp_path_factory.mktemp("qwen2_fast")
    (fast / "tokenizer.json").write_bytes((saved / "tokenizer.json").read_bytes())
    config = json.loads((saved / "tokenizer_config.json").read_text())
    (fast / "tokenizer_config.json").write_text(json.dumps(config | {"tokenizer_class": "Qwen2TokenizerFast"}))
    return files, saved, fast


@pytest.mark.parametrize("which", [0, 1, 2], ids=["vocab_merges", "tokenizer_json", "fast_class_name"])
def test_encode_decode_equal_hf(qwen2_dirs, which):
    hf, ours = load_pair(qwen2_dirs[which], "Qwen2Tokenizer")
    assert_encode_decode_equal_hf(hf, ours, TEXTS + QWEN2_TEXTS + random_texts() + qwen2_random_texts())
    assert ours.bos_token_id is None and ours.eos_token_id == hf.convert_tokens_to_ids("<|im_end|>")


def test_qwen2_rules_by_hand(qwen2_dirs):
    """No bos/eos added; each digit its own piece; NFC before BPE; specials matched whole; U+FFFD for a cut byte."""
    ours = weights_convert.load_tokenizer(qwen2_dirs[0])
    assert "2024" in ours.model.vocab  # the vocabulary has it, yet Qwen2 splits digits first:
    assert ours.tokenize("x 2024") == ours.tokenize("x ") + ["2", "0", "2", "4"]
    assert ours.encode("cafe\u0301") == ours.encode("café")
    assert ours.encode("<|im_start|>user") == [ours.token_to_id("<|im_start|>")] + ours.encode("user")
    lead_byte = ours.token_to_id(bytes_to_unicode()[0xC3])  # é's first UTF-8 byte, alone: invalid
    assert ours.decode([lead_byte, ours.token_to_id("a")]) == "\ufffda"  # errors="replace"
    assert ours.decode(ours.encode("a <|image_pad|>b"), skip_special_tokens=True) == "a b"


@pytest.mark.parametrize("kwargs", BATCH_SETTINGS)
def test_batch_padding_truncation_equal_hf(qwen2_dirs, kwargs):
    hf, ours = load_pair(qwen2_dirs[1], "Qwen2Tokenizer")
    assert_batch_equal_hf(hf, ours, ["Hello world!", "a photo of 12 red circles and 345 blue squares and more",
                                     "東京 😀", ""], kwargs)


def test_add_prefix_space_equal_hf(qwen2_dirs, tmp_path):
    (tmp_path / "tokenizer.json").write_bytes((qwen2_dirs[1] / "tokenizer.json").read_bytes())
    config = json.loads((qwen2_dirs[1] / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config | {"add_prefix_space": True}))
    hf, ours = load_pair(tmp_path, "Qwen2Tokenizer")
    for text in ["hello", " hello", "x 2024 y", "<|im_start|>user\nhi", "a\n\nb  c"]:
        assert ours.encode(text) == hf(text).input_ids, text
        assert ours.decode(hf(text).input_ids) == hf.decode(hf(text).input_ids)


def test_tiny_qwen2_vl_folder_loads(qwen2_dirs, tmp_path):
    """A Qwen2-VL checkpoint folder (model as trace/qwen2_vl.py builds it, Qwen2Tokenizer saved beside it):
    load_tokenizer reads it, the chat prompt's ids equal HF's, and the image token is the config's."""
    from minivlm.trace.qwen2_vl import chat_prompt, tiny_config
    hf = transformers.AutoTokenizer.from_pretrained(qwen2_dirs[0])
    hf.save_pretrained(tmp_path)
    ids = {t: hf.convert_tokens_to_ids(t) for t in QWEN2_VL_ADDED}
    config = tiny_config(len(hf))
    config |= {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
               "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"]}
    config["text_config"] |= {"bos_token_id": None, "eos_token_id": ids["<|im_end|>"],
                              "pad_token_id": ids["<|endoftext|>"]}
    torch.manual_seed(0)
    transformers.Qwen2VLForConditionalGeneration(transformers.Qwen2VLConfig(**{
        k: v for k, v in config.items() if k != "architectures"})).save_pretrained(tmp_path)
    ours = weights_convert.load_tokenizer(tmp_path)
    text = chat_prompt("What is in the image? 12 cats.", 4)
    assert ours.encode(text) == hf(text).input_ids
    assert ours.encode(text).count(config["image_token_id"]) == 4
    assert len(ours) == len(hf) == config["text_config"]["vocab_size"]
    model = weights_convert.load_pretrained(tmp_path)
    assert model.config.image_token_id == ours.token_to_id("<|image_pad|>")
