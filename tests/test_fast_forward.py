"""The forward path's shortcuts (blocks/activations.py INPLACE, blocks/mlp.py, blocks/transformer.py,
VisionTransformer.hidden_states_at) against the readable code they replace at inference."""
import pytest
import torch

from minivlm.blocks.activations import ACTIVATIONS, INPLACE, get_activation
from minivlm.blocks.mlp import MLP
from minivlm.blocks.transformer import EncoderLayer


@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_activation_is_the_activation(name):
    x = torch.linspace(-8, 8, 2001) * torch.randn(2001).exp()
    expected = ACTIVATIONS[name](x)
    y = x.clone()
    out = get_activation(name, inplace=True)(y)
    assert out.data_ptr() == y.data_ptr()  # it did overwrite its input: no new tensor
    assert torch.equal(out, expected)  # the same kernels, bit for bit


def test_activations_without_inplace_form_and_unknown_names():
    assert get_activation("gelu_fast", inplace=True) is None
    with pytest.raises(ValueError, match="unknown activation 'swoosh'"):
        get_activation("swoosh", inplace=True)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu", "gelu_pytorch_tanh", "relu", "gelu_fast"])
def test_mlp_inference_path_equals_autograd_path(act):
    torch.manual_seed(0)
    mlp = MLP(16, 40, act=act)
    x = torch.randn(2, 5, 16)
    h = x @ mlp.fc1.weight.T + mlp.fc1.bias
    expected = ACTIVATIONS[act](h) @ mlp.fc2.weight.T + mlp.fc2.bias  # the readable formula
    with_grad = mlp(x)  # parameters require grad: the out-of-place branch
    assert with_grad.requires_grad
    with torch.no_grad():
        fast = mlp(x)
    with torch.inference_mode():
        fast_im = mlp(x)
    torch.testing.assert_close(with_grad.detach(), expected)
    torch.testing.assert_close(fast, with_grad.detach(), rtol=1e-6, atol=1e-6)
    assert torch.equal(fast, fast_im)
    with_grad.sum().backward()  # the autograd branch still trains
    assert mlp.fc1.weight.grad is not None


def test_encoder_layer_residual_in_place_is_x_plus_sublayer():
    torch.manual_seed(0)
    layer = EncoderLayer(16, 4, 32, act="gelu").eval()
    x = torch.randn(2, 7, 16)
    kept = x.clone()
    with torch.no_grad():
        h = x + layer.attn(layer.norm1(x))
        expected = h + layer.mlp(layer.norm2(h))
        out = layer(x)
    assert torch.equal(out, expected)  # a + b == b + a in floating point: bit for bit
    assert torch.equal(x, kept)  # the caller's tensor (kept in hidden_states) is untouched
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()  # in-place on the linear outputs is legal for autograd
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


@pytest.mark.parametrize("layer", [-2, -1, 0, 3, [-2, -5], [4, 1, -1]])
@pytest.mark.parametrize("strategy", ["default", "full"])
def test_tower_features_run_only_the_layers_read(layer, strategy):
    from minivlm.models.clip import clip_vision_config
    from minivlm.models.llava import select_features, tower_features
    from minivlm.vision import VisionTransformer
    torch.manual_seed(0)
    tower = VisionTransformer(clip_vision_config(image_size=32, patch_size=8, hidden_size=32, num_layers=5,
                                                 num_heads=4, intermediate_size=64)).eval()
    px = torch.randn(2, 3, 32, 32)
    ran = []
    hooks = [m.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, m in enumerate(tower.encoder.layers)]
    with torch.no_grad():
        fast = tower_features(tower, px, layer, strategy)
        deepest = max(k % 6 for k in ([layer] if isinstance(layer, int) else layer))
        assert ran == list(range(deepest))  # layers past the deepest one read never ran
        full = select_features(tower(px, output_hidden_states=True).hidden_states, layer, strategy)
    for h in hooks:
        h.remove()
    assert torch.equal(fast, full)
