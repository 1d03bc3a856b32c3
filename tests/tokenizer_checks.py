"""Checks shared by the tokenizer test files: batch encoding against transformers' tokenizer."""
import torch

# Padding and truncation settings a batch is encoded with; model_max_length is 12 in the test folders.
BATCH_SETTINGS = [dict(padding=True), dict(padding="max_length", max_length=30),
                  dict(padding=True, truncation=True, max_length=6),
                  dict(padding=True, max_length=5),  # HF: max_length ignored, no truncation
                  dict(padding="max_length", truncation=True),  # model_max_length = 12
                  dict(padding=True, padding_side="left"),
                  dict(padding=True, truncation=True, max_length=4, truncation_side="left")]


def load_pair(folder, hf_class):
    """(transformers' tokenizer, ours) for one folder; HF's must be of class hf_class."""
    import transformers
    import weights_convert
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    assert type(hf).__name__ == hf_class
    return hf, weights_convert.load_tokenizer(folder)


def assert_batch_equal_hf(hf, ours, texts, settings):
    """Same input_ids and attention_mask tensors for a batch, and the same ids for one text."""
    settings = dict(settings)
    if "truncation_side" in settings:
        hf.truncation_side = ours.truncation_side = settings.pop("truncation_side")
    expected, got = hf(texts, return_tensors="pt", **settings), ours(texts, return_tensors="pt", **settings)
    assert got["input_ids"].dtype == torch.long
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert ours(texts[0], **settings)["input_ids"] == hf(texts[0], **settings)["input_ids"]


def assert_encode_decode_equal_hf(hf, ours, texts):
    """Ids with and without special tokens, decoding with and without them and cut at every length
    (e.g. inside a multi-byte character), and the special ids."""
    for text in texts:
        ids = hf(text).input_ids
        assert ours.encode(text) == ids, text
        assert ours.encode(text, add_special_tokens=False) == hf(text, add_special_tokens=False).input_ids
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text
        for k in range(len(ids)):
            assert ours.decode(ids[:k]) == hf.decode(ids[:k])
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id) == (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id)
