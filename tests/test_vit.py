"""ViT components and corners: patchify, interpolation, hidden states, losses, bad input."""
import tempfile

import pytest
import torch
import torch.nn.functional as F
import transformers
from einops import rearrange

import weights_convert
from minivlm.vision import PatchEmbedding, VisionConfig, VisionTransformer

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            image_size=30, patch_size=6)


def roundtrip(hf_model):
    with tempfile.TemporaryDirectory() as d:
        hf_model.save_pretrained(d)
        return weights_convert.load_pretrained(d, dtype=torch.float32)


def test_conv_patchify_equals_unfold_plus_linear():
    cfg = VisionConfig(image_size=(12, 18), patch_size=6, hidden_size=10, num_heads=2)
    embed = PatchEmbedding(cfg)
    x = torch.randn(2, 3, 12, 18)
    patches = F.unfold(x, kernel_size=6, stride=6)  # (B, 3*6*6, N), patches in row-major order
    flat_w = embed.proj.weight.reshape(10, -1)  # (D, 3*6*6)
    expected = rearrange(patches, "b k n -> b n k") @ flat_w.T + embed.proj.bias
    torch.testing.assert_close(embed(x), expected, atol=1e-5, rtol=1e-5)
    # the same by hand with einops: cut into a grid, flatten each patch channel-first
    by_hand = rearrange(x, "b c (gh p) (gw q) -> b (gh gw) (c p q)", p=6, q=6) @ flat_w.T + embed.proj.bias
    torch.testing.assert_close(embed(x), by_hand, atol=1e-5, rtol=1e-5)
    assert embed(x).shape == (2, 6, 10)


@torch.no_grad()
def test_interpolated_positions_and_hidden_states_match_hf():
    torch.manual_seed(0)
    ref = transformers.ViTModel(transformers.ViTConfig(**TINY)).eval()
    ours = roundtrip(ref)
    x = torch.randn(2, 3, 42, 24)  # another resolution, not square
    a = ours(x, interpolate_pos_encoding=True, output_hidden_states=True)
    b = ref(x, interpolate_pos_encoding=True, output_hidden_states=True)
    assert a.last_hidden_state.shape == (2, 1 + 7 * 4, 32)
    assert (a.last_hidden_state - b.last_hidden_state).abs().max() < 1e-5
    assert len(a.hidden_states) == len(b.hidden_states) == 3
    for h1, h2 in zip(a.hidden_states, b.hidden_states):
        assert (h1 - h2).abs().max() < 1e-5


@torch.no_grad()
@pytest.mark.parametrize("num_labels,labels", [(4, torch.tensor([0, 3])), (1, torch.tensor([0.5, -1.0])),
                                               (3, torch.tensor([[1.0, 0, 1], [0, 1, 0]]))])
def test_classification_loss_matches_hf(num_labels, labels):
    torch.manual_seed(0)
    ref = transformers.ViTForImageClassification(transformers.ViTConfig(**TINY, num_labels=num_labels)).eval()
    ours = roundtrip(ref)
    x = torch.randn(2, 3, 30, 30)
    a, b = ours(x, labels=labels), ref(x, labels=labels)
    assert (a.logits - b.logits).abs().max() < 1e-5
    assert abs(a.loss.item() - b.loss.item()) < 1e-5


def test_bad_pixel_values_get_clear_errors():
    model = VisionTransformer(VisionConfig(image_size=30, patch_size=6, hidden_size=16, num_heads=2,
                                           num_layers=1, intermediate_size=8))
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\)"):
        model(torch.randn(3, 30, 30))
    with pytest.raises(ValueError, match="4 channels"):
        model(torch.randn(1, 4, 30, 30))
    with pytest.raises(ValueError, match="32x30 but the model was trained at 30x30"):
        model(torch.randn(1, 3, 32, 30))
    with pytest.raises(ValueError, match="smaller than one 6x6 patch"):
        model(torch.randn(1, 3, 4, 30), interpolate_pos_encoding=True)


def test_impossible_configs_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        VisionConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="class_token"):
        VisionConfig(class_token=False, pooler="cls")
    with pytest.raises(ValueError, match="final_norm"):
        VisionConfig(final_norm="middle")
