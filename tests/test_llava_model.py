"""LLaVA pieces on their own: the projector builder against hand-built torch modules, the image-token
count error, inputs without images, and freezing for the two training stages."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minivlm.models.clip import clip_vision_config
from minivlm.models.llava import LlavaConfig, LlavaForConditionalGeneration, freeze, merge_image_features
from minivlm.models.projector import Projector, build_projector
from minivlm.text.llama_config import LlamaConfig


def test_linear_projector_is_one_linear():
    p = build_projector("linear", 6, 5)
    x = torch.randn(2, 3, 6)
    assert list(dict(p.named_parameters())) == ["linear_1.weight", "linear_1.bias"]
    assert torch.allclose(p(x), x @ p.linear_1.weight.T + p.linear_1.bias)


def test_mlp3x_gelu_equals_the_original_sequential():
    p = build_projector("mlp3x_gelu", 6, 5)
    # The original repo: nn.Sequential(Linear(6, 5), GELU(), Linear(5, 5), GELU(), Linear(5, 5)).
    seq = nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 5), nn.GELU(), nn.Linear(5, 5))
    for k, layer in enumerate(p.linears()):
        seq[2 * k].load_state_dict(layer.state_dict())
    x = torch.randn(4, 6)
    assert torch.allclose(p(x), seq(x), atol=1e-6)


def test_projector_specs_and_errors():
    assert isinstance(build_projector("identity", 4, 4), nn.Identity)
    assert build_projector("mlp2x_gelu", 3, 4, bias=False).linear_2.bias is None
    p = Projector(3, 4, depth=2, act="relu")
    x = torch.randn(2, 3)
    assert torch.allclose(p(x), p.linear_2(F.relu(p.linear_1(x))))
    with pytest.raises(ValueError, match="unknown projector spec 'mlp_gelu'"):
        build_projector("mlp_gelu", 3, 4)
    with pytest.raises(ValueError, match="equal widths, got vision 3 and text 4"):
        build_projector("identity", 3, 4)
    with pytest.raises(ValueError, match="unknown activation 'swiglu'"):
        build_projector("mlp2x_swiglu", 3, 4)


def test_merge_writes_features_in_reading_order():
    embeds = torch.zeros(2, 4, 3)
    ids = torch.tensor([[5, 9, 9, 5], [9, 9, 5, 5]])
    feats = torch.arange(12.0).reshape(2, 2, 3)  # image 0 -> row 0, image 1 -> row 1
    out = merge_image_features(embeds, ids, feats, 9)
    assert torch.equal(out[0, 1:3], feats[0]) and torch.equal(out[1, 0:2], feats[1])
    assert (out[0, [0, 3]] == 0).all()
    with pytest.raises(ValueError, match=r"input_ids hold 4 image token\(s\) \(id 9\) but the 1 image\(s\) give 2 "
                                         r"feature\(s\) \(2 per image\)"):
        merge_image_features(embeds, ids, feats[:1], 9)


def tiny_llava(**overrides):
    torch.manual_seed(0)
    vision = clip_vision_config(image_size=16, patch_size=8, hidden_size=16, num_layers=2, num_heads=2,
                                intermediate_size=20)
    text = LlamaConfig(vocab_size=40, hidden_size=24, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1)
    return LlavaForConditionalGeneration(LlavaConfig(vision, text, image_token_index=39, image_seq_length=4,
                                                     **overrides))


def test_clear_errors_for_images_and_tokens():
    model = tiny_llava()
    ids = torch.tensor([[1, 39, 39, 39, 39, 5]])
    pixels = torch.randn(1, 3, 16, 16)
    assert model(input_ids=ids, pixel_values=pixels).logits.shape == (1, 6, 40)
    with pytest.raises(ValueError, match=r"input_ids hold 3 image token\(s\) \(id 39\) but the 1 image\(s\) give 4"):
        model(input_ids=torch.tensor([[1, 39, 39, 39, 5, 6]]), pixel_values=pixels)
    with pytest.raises(ValueError, match=r"input_ids hold 4 image token\(s\) \(id 39\) but no pixel_values"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="vision_feature_layer 3 is out of range for a tower of 2 layers"):
        model(input_ids=ids, pixel_values=pixels, vision_feature_layer=3)
    with pytest.raises(ValueError, match="vision_feature_select_strategy must be 'default' or 'full'"):
        tiny_llava(vision_feature_select_strategy="cls")
    # text only: no image tokens, no pixels
    assert model(input_ids=torch.tensor([[1, 5, 6]])).logits.shape == (1, 3, 40)


def test_original_projector_spec_builds_that_projector():
    model = tiny_llava(projector_type="linear")
    assert model.multi_modal_projector.depth == 1


@pytest.mark.parametrize("stage, parts", [(1, {"multi_modal_projector"}),
                                          ("finetune", {"multi_modal_projector", "language_model"})])
def test_freeze_for_the_training_stages(stage, parts):
    model = tiny_llava()
    trainable = freeze(model, stage)
    assert {n.split(".")[0] for n in trainable} == parts
    ids = torch.tensor([[1, 39, 39, 39, 39, 5, 6, 7]])
    loss = model(input_ids=ids, pixel_values=torch.randn(1, 3, 16, 16), labels=ids.masked_fill(ids == 39, -100)).loss
    loss.backward()
    for name, p in model.named_parameters():
        has_grad = p.grad is not None and p.grad.abs().sum() > 0
        assert has_grad == (name.split(".")[0] in parts), name
    with pytest.raises(ValueError, match="stage must be 1"):
        freeze(model, 3)
