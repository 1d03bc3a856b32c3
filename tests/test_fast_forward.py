"""The forward path's swaps (minivlm/fast/inplace.py, fast/swaps.py) against the readable modules they
replace, and VisionTransformer.hidden_states_at against the full forward."""
import copy

import pytest
import torch

from minivlm.blocks.activations import ACTIVATIONS
from minivlm.blocks.mlp import MLP, SwiGLU
from minivlm.blocks.transformer import EncoderLayer
from minivlm.fast import inplace_inference, readable_inference
from minivlm.fast.inplace import INPLACE, InplaceEncoderLayer, InplaceMLP, InplaceSwiGLU


@pytest.mark.parametrize("name", sorted(n for n, f in ACTIVATIONS.items() if f in INPLACE))
def test_inplace_activation_is_the_activation(name):
    x = torch.linspace(-8, 8, 2001) * torch.randn(2001).exp()
    expected = ACTIVATIONS[name](x)
    y = x.clone()
    out = INPLACE[ACTIVATIONS[name]](y)
    assert out.data_ptr() == y.data_ptr()  # it did overwrite its input: no new tensor
    assert torch.equal(out, expected)  # the same kernels, bit for bit


def test_every_activation_but_gelu_fast_has_an_inplace_form():
    assert {n for n, f in ACTIVATIONS.items() if f not in INPLACE} == {"gelu_fast"}


@pytest.mark.parametrize("act", ["quick_gelu", "gelu", "gelu_pytorch_tanh", "relu", "gelu_fast", "silu"])
@pytest.mark.parametrize("kind", [MLP, SwiGLU])
def test_inplace_mlp_swap_equals_the_readable_mlp(act, kind):
    torch.manual_seed(0)
    readable = kind(16, 40, act=act)
    swapped = inplace_inference(copy.deepcopy(readable))
    if act != "gelu_fast":
        assert type(swapped) is {MLP: InplaceMLP, SwiGLU: InplaceSwiGLU}[kind]
    x = torch.randn(2, 5, 16)
    expected = readable(x)
    with_grad = swapped(x)  # parameters require grad: the out-of-place route
    assert torch.equal(with_grad, expected) and with_grad.requires_grad
    with torch.no_grad():
        fast = swapped(x)
    with torch.inference_mode():
        fast_im = swapped(x)
    assert torch.equal(fast, expected.detach()) and torch.equal(fast_im, fast)
    with_grad.sum().backward()  # the swapped module still trains
    assert next(swapped.parameters()).grad is not None
    assert swapped.state_dict().keys() == readable.state_dict().keys()
    assert type(readable_inference(swapped)) is kind


def test_inplace_residual_swap_is_x_plus_sublayer():
    torch.manual_seed(0)
    readable = EncoderLayer(16, 4, 32, act="gelu").eval()
    layer = inplace_inference(copy.deepcopy(readable))
    assert type(layer) is InplaceEncoderLayer
    x = torch.randn(2, 7, 16)
    kept = x.clone()
    with torch.no_grad():
        expected = readable(x)
        out = layer(x)
    assert torch.equal(out, expected)  # a + b == b + a in floating point: bit for bit
    assert torch.equal(x, kept)  # the caller's tensor (kept in hidden_states) is untouched
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 stream, bf16 sublayers
        assert layer(x).dtype == torch.float32


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
