"""Zero-shot classification: a hand-built case worked out on paper, and agreement with a real model's forward."""
import math

import pytest
import torch
from torch import nn

from minivlm.models.clip import CLIPConfig, CLIPModel, clip_text_config, clip_vision_config
from minivlm.evaluation.zero_shot import class_embeddings, classify, zero_shot

# Text "model": each prompt has a hand-chosen feature vector (not normalised on purpose).
PROMPTS = ["a cat", "the cat", "a dog", "the dog"]
TEXT_FEATURES = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.5]])


class StubDualEncoder(nn.Module):
    def __init__(self, logit_scale, logit_bias=None):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.logit_bias = None if logit_bias is None else nn.Parameter(torch.tensor(logit_bias))

    def get_text_features(self, input_ids, attention_mask=None):
        assert attention_mask is not None and attention_mask.shape == input_ids.shape
        return TEXT_FEATURES[input_ids[:, 0]]

    def get_image_features(self, pixel_values):  # the "image" is its feature vector
        return pixel_values


def tokenize(prompts):
    ids = torch.tensor([[PROMPTS.index(p)] for p in prompts])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_hand_built_case():
    model = StubDualEncoder(logit_scale=2.0)
    classes = class_embeddings(model, tokenize, ["cat", "dog"], templates=("a {}", "the {}"))
    # cat: mean of (0.6, 0.8) and (1, 0) = (0.8, 0.4), renormalised -> (2, 1)/sqrt(5); dog: (0, 1).
    s5 = math.sqrt(5)
    torch.testing.assert_close(classes, torch.tensor([[2 / s5, 1 / s5], [0.0, 1.0]]))

    images = torch.tensor([[5.0, 0.0], [0.0, 3.0]])  # unit vectors (1, 0) and (0, 1) after normalising
    probs, names = zero_shot(model, tokenize, images, ["cat", "dog"], templates=("a {}", "the {}"))
    # image 0: logits 2 * (2/sqrt5, 0); image 1: 2 * (1/sqrt5, 1)
    p_cat_0 = 1 / (1 + math.exp(-(4 / s5)))
    p_dog_1 = 1 / (1 + math.exp(-(2 - 2 / s5)))
    torch.testing.assert_close(probs, torch.tensor([[p_cat_0, 1 - p_cat_0], [1 - p_dog_1, p_dog_1]]))
    assert names == ["cat", "dog"]


def test_sigmoid_uses_scale_and_bias():
    model = StubDualEncoder(logit_scale=2.0, logit_bias=-1.0)
    classes = class_embeddings(model, tokenize, ["cat", "dog"], templates=("a {}",))  # (0.6, 0.8), (0, 1)
    probs = classify(model, torch.tensor([[1.0, 0.0]]), classes, sigmoid=True)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    torch.testing.assert_close(probs, torch.tensor([[sig(2 * 0.6 - 1), sig(2 * 0.0 - 1)]]))


def test_bad_template():
    with pytest.raises(ValueError, match="no '\\{\\}'"):
        class_embeddings(StubDualEncoder(1.0), tokenize, ["cat"], templates=("a photo",))


def test_matches_the_models_own_logits():
    """One template per class: zero-shot probabilities = softmax of CLIPModel.forward's logits_per_image."""
    torch.manual_seed(0)
    cfg = CLIPConfig(text=clip_text_config(vocab_size=40, hidden_size=16, num_layers=1, num_heads=2,
                                           intermediate_size=24, max_position_embeddings=6, eos_token_id=39),
                     vision=clip_vision_config(image_size=12, patch_size=4, hidden_size=16, num_layers=1,
                                               num_heads=2, intermediate_size=24),
                     projection_dim=8)
    model = CLIPModel(cfg).eval()
    names = ["red", "green", "blue"]
    table = {f"a {n} thing": torch.tensor([5 + i, 7, 9 + 2 * i, 39, 0, 0]) for i, n in enumerate(names)}

    def tok(prompts):
        ids = torch.stack([table[p] for p in prompts])
        return {"input_ids": ids, "attention_mask": (torch.arange(6) < 4).long().expand_as(ids)}

    pixels = torch.randn(2, 3, 12, 12)
    probs, _ = zero_shot(model, tok, pixels, names, templates=("a {} thing",))
    with torch.no_grad():
        out = model(pixel_values=pixels, **tok([f"a {n} thing" for n in names]))
    torch.testing.assert_close(probs, out.logits_per_image.softmax(dim=-1))
