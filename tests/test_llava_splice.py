"""The original LLaVA convention (one -200 per image, spliced) against HF's expanded convention run by
transformers itself: same logits, same loss, same greedy ids; tokenizer_image_token's bos rule."""

import pytest
import torch

from minivlm.models.llava_splice import (IGNORE_INDEX, IMAGE_TOKEN_INDEX, expand_image_tokens, splice_image_features,
                                         splice_inputs, tokenizer_image_token)
from minivlm.parity import FP32_TOLERANCE
from minivlm.parity.harness import build_seeded, convert_reference
from minivlm.parity.llava import CASES, features_per_image


class CharTokenizer:
    """One id per character (ord), bos = 1 in front, as a LLaMA tokenizer's encode does."""
    bos_token_id = 1

    def __init__(self, bos=True):
        self.bos = bos

    def encode(self, text):
        return ([self.bos_token_id] if self.bos else []) + [ord(c) for c in text]


def test_tokenizer_image_token_keeps_one_bos():
    tok = CharTokenizer()
    assert tokenizer_image_token("ab<image>c", tok) == [1, 97, 98, -200, 99]
    assert tokenizer_image_token("<image>\nab", tok) == [1, -200, 10, 97, 98]
    assert tokenizer_image_token("a<image><image>b", tok, image_token_index=7) == [1, 97, 7, 7, 98]
    assert tokenizer_image_token("no image", tok) == tok.encode("no image")


def test_tokenizer_image_token_without_bos():
    tok = CharTokenizer(bos=False)
    assert tokenizer_image_token("ab<image>c", tok) == [97, 98, -200, 99]
    assert tokenizer_image_token("<image>x", tok) == [-200, 120]


def test_expand_image_tokens():
    ids, labels = expand_image_tokens([1, 5, -200, 6, -200], 3, 9, labels=[-100, 5, -200, 6, -200])
    assert ids.tolist() == [1, 5, 9, 9, 9, 6, 9, 9, 9]
    assert labels.tolist() == [-100, 5, -100, -100, -100, 6, -100, -100, -100]


@pytest.fixture(scope="module")
def pair():
    reference = build_seeded(next(c for c in CASES if c.name == "several-images-per-prompt/loss").build_reference)
    ours = convert_reference(reference)
    return ours, reference


def _samples(config, generator):
    """Two samples in the original convention: [bos, text, -200, text], [bos, -200, text, -200, text]."""
    def text(n):
        return torch.randint(3, config.image_token_index, (n,), generator=generator).tolist()
    a = [1] + text(4) + [IMAGE_TOKEN_INDEX] + text(6)
    b = [1, IMAGE_TOKEN_INDEX] + text(3) + [IMAGE_TOKEN_INDEX] + text(5)
    labels = [[IGNORE_INDEX] * 8 + s[8:] for s in (a, b)]  # a masked prompt, as instruction data has
    pixels = torch.randn(3, 3, 30, 30, generator=generator)
    return [a, b], labels, pixels


def _pad(rows, value, side):
    longest = max(len(r) for r in rows)
    out = torch.full((len(rows), longest), value, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(longest - len(r), longest) if side == "left" else slice(0, len(r))
        out[i, sl], mask[i, sl] = torch.as_tensor(r), 1
    return out, mask


@pytest.mark.parametrize("side", ["right", "left"])
@torch.no_grad()
def test_splice_equals_hf_expanded_convention(pair, side):
    ours, reference = pair
    cfg = reference.config
    n = features_per_image(cfg)
    samples, labels, pixels = _samples(cfg, torch.Generator().manual_seed(0))
    # HF's convention, run by transformers: N <image> tokens per image in the ids.
    expanded = [expand_image_tokens(s, n, cfg.image_token_index, labels=l) for s, l in zip(samples, labels)]
    ids_x, mask_x = _pad([e[0].tolist() for e in expanded], 0, side)
    labels_x, _ = _pad([e[1].tolist() for e in expanded], IGNORE_INDEX, side)
    positions = (mask_x.cumsum(1) - 1).clamp(min=0) * mask_x
    hf = reference(input_ids=ids_x, attention_mask=mask_x, pixel_values=pixels, labels=labels_x,
                   position_ids=positions)
    # The original convention, in minivlm: one -200 per image, padded with pad id 0, spliced.
    ids_s, mask_s = _pad(samples, 0, "right")
    labels_s, _ = _pad(labels, IGNORE_INDEX, "right")
    spliced = splice_inputs(ours, ids_s, pixels, mask_s, labels_s, padding_side=side)
    assert torch.equal(spliced["attention_mask"], mask_x)
    assert torch.equal(spliced["labels"], labels_x)
    mine = ours(**spliced)
    real = mask_x.bool()
    assert (mine.logits - hf.logits)[real].abs().max() <= FP32_TOLERANCE
    assert (mine.loss - hf.loss).abs() <= FP32_TOLERANCE


@torch.no_grad()
def test_truncation_to_max_length(pair):
    """Cut after splicing, like the original: the sample equals the expanded one cut to max_length."""
    ours, reference = pair
    cfg = reference.config
    n = features_per_image(cfg)
    samples, labels, pixels = _samples(cfg, torch.Generator().manual_seed(1))
    max_length = 2 * n + 6  # sample a (n + 11 long) survives whole, b (2n + 9) loses 3 text tokens
    ids_s, mask_s = _pad(samples, 0, "right")
    labels_s, _ = _pad(labels, IGNORE_INDEX, "right")
    spliced = splice_inputs(ours, ids_s, pixels, mask_s, labels_s, max_length=max_length)
    assert spliced["inputs_embeds"].shape[1] == max_length
    assert spliced["attention_mask"].sum(1).tolist() == [n + 11, max_length]
    ids_b, labels_b = expand_image_tokens(samples[1], n, cfg.image_token_index, labels=labels[1])
    assert torch.equal(spliced["labels"][1], labels_b[:max_length])
    hf = reference(input_ids=ids_b[None, :max_length], pixel_values=pixels[1:])
    assert (ours(**spliced).logits[1] - hf.logits[0]).abs().max() <= FP32_TOLERANCE


@torch.no_grad()
def test_spliced_generate_equals_hf_generate(pair):
    ours, reference = pair
    cfg = reference.config
    n = features_per_image(cfg)
    samples, _, pixels = _samples(cfg, torch.Generator().manual_seed(2))
    ids_x, mask_x = _pad([expand_image_tokens(s, n, cfg.image_token_index).tolist() for s in samples], 0, "left")
    hf_ids = reference.generate(input_ids=ids_x, attention_mask=mask_x, pixel_values=pixels, max_new_tokens=6,
                                do_sample=False)
    ids_s, mask_s = _pad(samples, 0, "left")
    spliced = splice_inputs(ours, ids_s, pixels, mask_s, padding_side="left")
    new = ours.generate(inputs_embeds=spliced["inputs_embeds"], attention_mask=spliced["attention_mask"],
                        max_new_tokens=6)
    assert torch.equal(new, hf_ids[:, ids_x.shape[1]:])


def test_placeholder_count_mismatch_is_an_error():
    embed = torch.nn.Embedding(10, 4)
    ids = torch.tensor([[1, -200, 3, -200]])
    with pytest.raises(ValueError, match=r"hold 2 image placeholder\(s\) \(id -200\) but 1 image\(s\)"):
        splice_image_features(ids, [torch.zeros(3, 4)], embed)


def test_splice_variable_feature_counts_by_hand():
    """Images of different sizes (anyres) splice in order; checked against a hand-built sequence."""
    embed = torch.nn.Embedding(10, 2)
    ids = torch.tensor([[1, -200, 3, -200, 4], [2, 5, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    f1, f2 = torch.full((2, 2), 7.0), torch.full((3, 2), 8.0)
    out = splice_image_features(ids, [f1, f2], embed, mask, padding_side="left")
    e = embed.weight
    row0 = torch.cat([e[1:2], f1, e[3:4], f2, e[4:5]])  # 1 + 2 + 1 + 3 + 1 = 8
    assert torch.equal(out["inputs_embeds"][0], row0)
    assert torch.equal(out["inputs_embeds"][1, -2:], e[[2, 5]])
    assert out["attention_mask"].tolist()[1] == [0] * 6 + [1, 1]
    assert out["position_ids"].tolist() == [list(range(8)), [0] * 6 + [0, 1]]
    cut = splice_image_features(ids, [f1, f2], embed, mask, max_length=4)  # right padding, cut inside image 2
    assert torch.equal(cut["inputs_embeds"][0], row0[:4])
    assert cut["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
