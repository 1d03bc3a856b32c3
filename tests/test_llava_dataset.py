"""LLaVA data: labels only on replies (checked by hand and with a sentencepiece-style BPE), the
inconsistent-mask failure naming the sample, the collator, the label view, and the data path into
the model: the HF and the original conventions give transformers' loss."""

import pytest
import torch

from minivlm.data.llava_dataset import (LabelMaskError, LlavaCollator, LlavaDataset, label_table, shapes_records,
                                        tokenize_conversation)
from minivlm.data.shapes import ShapesWorld
from minivlm.models.llava_splice import IGNORE_INDEX, IMAGE_TOKEN_INDEX, splice_inputs, tokenizer_image_token
from minivlm.parity import FP32_TOLERANCE
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.parity.llava import CASES, features_per_image
from minivlm.processing.conversation import render
from minivlm.processing.processors import ImageProcessor


class CharTokenizer:
    """One id per character, bos in front (as a LLaMA tokenizer's encode); ids folded into a small
    vocabulary when `fold` is given (for the tiny models), "</s>" read as one eos token."""
    bos_token_id, eos_token_id = 1, 2

    def __init__(self, fold=None):
        self.fold = fold

    def encode(self, text):
        ids, i = [self.bos_token_id], 0
        while i < len(text):
            if text.startswith("</s>", i):
                ids.append(self.eos_token_id)
                i += 4
            else:
                ids.append(ord(text[i]) if self.fold is None else 3 + ord(text[i]) % self.fold)
                i += 1
        return ids

    def decode(self, ids):
        return "".join("</s>" if i == 2 else chr(i) for i in ids if i != self.bos_token_id)


class GreedyTokenizer(CharTokenizer):
    """Longest match over a vocabulary that has ": A" as one token — it straddles 'ASSISTANT:' | ' A'."""
    MERGED = ": A"

    def encode(self, text):
        ids, i = [self.bos_token_id], 0
        while i < len(text):
            if text.startswith(self.MERGED, i):
                ids.append(1000)
                i += len(self.MERGED)
            else:
                ids.append(ord(text[i]))
                i += 1
        return ids


TURNS = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."},
         {"from": "human", "value": "Color?"}, {"from": "gpt", "value": "Black."}]


def test_labels_train_only_on_replies():
    tok = CharTokenizer()
    rendered = render("vicuna_v1", TURNS)
    ids, labels = tokenize_conversation(rendered, tok, "s0")
    assert ids == tokenizer_image_token(rendered.text, tok)
    assert ids[0] == tok.bos_token_id and labels[0] == IGNORE_INDEX
    assert labels[ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX
    trained = [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    assert tok.decode(trained) == " A cat.</s> Black.</s>"  # replies and their end token, nothing else
    assert all(lab in (IGNORE_INDEX, i) for i, lab in zip(ids, labels))


def test_labels_with_a_sentencepiece_style_bpe():
    """A LLaMA-like tokenizer (metaspace, bos template, </s> special) built with `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    corpus = [render("vicuna_v1", TURNS).text.replace("</s>", " ")] * 20 + ["what color is the circle"] * 5
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>",
                                                                                          "<image>"]))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    rendered = render("vicuna_v1", TURNS)
    ids, labels = tokenize_conversation(rendered, tok, "s0")
    spans = []  # each run of trained tokens, decoded
    run = []
    for i, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            run.append(i)
        elif run:
            spans.append(run)
            run = []
    if run:
        spans.append(run)
    assert [tok.decode(r) for r in spans] == ["A cat.</s>", "Black.</s>"]


def test_inconsistent_mask_raises_naming_the_sample():
    records = [{"id": "bad-1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "A b"}]}]
    ds = LlavaDataset(records, GreedyTokenizer(), template="llava_hf")
    with pytest.raises(LabelMaskError, match=r"sample 'bad-1': cannot mask the labels: the text up to character 19 .*USER: hi ASSISTANT:"):
        ds[0]


def test_image_marker_count_must_match_images():
    world = ShapesWorld(image_size=30)
    record = shapes_records(world, 1)[0]
    record["conversations"][0]["value"] = "describe the image."  # marker removed, image kept
    ds = LlavaDataset([record], CharTokenizer(), ImageProcessor(size={"height": 30, "width": 30}))
    with pytest.raises(ValueError, match=r"sample 'shapes-train-0': its turns hold 0 <image> marker\(s\) but it has 1"):
        ds[0]


def test_collator_pads_and_stacks():
    world = ShapesWorld(image_size=30)
    records = shapes_records(world, 2)
    records.append({"id": "text-only", "conversations": [{"from": "human", "value": "hi"},
                                                         {"from": "gpt", "value": "yo"}]})
    proc = ImageProcessor(size={"height": 30, "width": 30})
    ds = LlavaDataset(records, CharTokenizer(), proc)
    items = [ds[2], ds[0], ds[1]]
    pad = 104  # 'h': a real token, so the mask must not come from ids != pad
    batch = LlavaCollator(pad_token_id=pad)(items)
    lengths = [len(it["input_ids"]) for it in items]
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["input_ids"].shape == (3, max(lengths))
    assert (batch["input_ids"][0, lengths[0]:] == pad).all() and (batch["labels"][0, lengths[0]:] == -100).all()
    assert torch.equal(batch["pixel_values"], torch.cat([proc(r["image"])["pixel_values"] for r in records[:2]]))
    assert batch["ids"] == ["text-only", "shapes-train-0", "shapes-train-1"]
    left = LlavaCollator(pad_token_id=0, padding_side="left")(items)
    assert torch.equal(left["input_ids"][0, -lengths[0]:], items[0]["input_ids"])
    assert LlavaCollator(pad_token_id=0)([ds[2]])["pixel_values"] is None


def test_collator_refuses_to_cut_an_expanded_image():
    world = ShapesWorld(image_size=30)
    ds = LlavaDataset(shapes_records(world, 1), CharTokenizer(fold=60), ImageProcessor(size={"height": 30, "width": 30}),
                      template="llava_hf", image_token_id=70, num_image_tokens=25)
    item = ds[0]
    assert (item["input_ids"] == 70).sum() == 25
    start = int((item["input_ids"] == 70).nonzero()[0])
    with pytest.raises(ValueError, match="sample 'shapes-train-0': max_length=.* cuts through an image"):
        LlavaCollator(0, max_length=start + 5, image_token_id=70)([item])
    assert LlavaCollator(0, max_length=start + 25, image_token_id=70)([item])["input_ids"].shape[1] == start + 25


def test_label_table_marks_the_reply_tokens():
    tok = CharTokenizer()
    ids, labels = tokenize_conversation(render("llava_hf", TURNS[:2]), tok, "s0")
    table = label_table(ids, labels, tok).splitlines()
    assert len(table) == 1 + len(ids)  # header + one line per token (one image placeholder)
    marked = [line for line in table[1:] if line.endswith("yes")]
    assert len(marked) == len(" A cat. ")
    assert "<image> x 1" in table[1 + ids.index(IMAGE_TOKEN_INDEX)]
    expanded = label_table([1, 9, 9, 9, 5], [-100, -100, -100, -100, 5], tok, image_token_ids=(9,))
    assert "1-3" in expanded and "<image> x 3" in expanded and len(expanded.splitlines()) == 4


@torch.no_grad()
def test_both_conventions_through_the_data_path_give_transformers_loss():
    reference = build_seeded(next(c for c in CASES if c.name == "default-layer-2-gqa/loss").build_reference)
    ours = convert_reference(reference)
    cfg = reference.config
    world = ShapesWorld(image_size=30)
    records = shapes_records(world, 3)
    proc = ImageProcessor(size={"height": 30, "width": 30})
    tok = CharTokenizer(fold=60)  # ids 3..62 < the <image> id 70
    hf_ds = LlavaDataset(records, tok, proc, image_token_id=cfg.image_token_index,
                         num_image_tokens=features_per_image(cfg))
    batch = LlavaCollator(pad_token_id=0)([hf_ds[i] for i in range(3)])
    batch.pop("ids")
    expected = reference(**batch).loss
    assert (ours(**batch).loss - expected).abs() <= FP32_TOLERANCE
    orig_ds = LlavaDataset(records, tok, proc)  # one -200 per image, spliced in the model
    orig = LlavaCollator(pad_token_id=0)([orig_ds[i] for i in range(3)])
    spliced = splice_inputs(ours, orig["input_ids"], orig["pixel_values"], orig["attention_mask"], orig["labels"])
    assert (ours(**spliced).loss - expected).abs() <= FP32_TOLERANCE
