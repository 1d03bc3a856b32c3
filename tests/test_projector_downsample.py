"""The downsample (pixel-shuffle) projector: space-to-depth checked by hand on a tiny grid, the token
count cut by factor^2, the LayerNorm -> linear -> act -> linear path by hand, the builder spec, errors."""
import pytest
import torch
import torch.nn.functional as F

from minivlm.models.projector import PixelShuffleProjector, build_projector


def test_space_to_depth_by_hand():
    # A 4 x 4 grid of tokens, token (r, c) has the 1-wide feature 10 * r + c.
    grid = torch.tensor([[10.0 * r + c for c in range(4)] for r in range(4)])
    x = grid.reshape(1, 16, 1)
    out = PixelShuffleProjector(1, 3, factor=2).space_to_depth(x)
    # Each 2 x 2 block, row by row; inside a block: top-left, top-right, bottom-left, bottom-right.
    want = torch.tensor([[0, 1, 10, 11], [2, 3, 12, 13], [20, 21, 30, 31], [22, 23, 32, 33]], dtype=torch.float)
    assert torch.equal(out[0], want)


def test_space_to_depth_keeps_features_of_a_token_together():
    x = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)  # 2 x 2 grid, D = 3
    out = PixelShuffleProjector(3, 5, factor=2).space_to_depth(x)
    assert out.shape == (2, 1, 12) and torch.equal(out[:, 0], x.reshape(2, 12))


@pytest.mark.parametrize("factor,side", [(1, 6), (2, 6), (3, 6), (2, 24), (4, 24)])
def test_cuts_tokens_by_factor_squared(factor, side):
    proj = PixelShuffleProjector(8, 16, factor=factor)
    out = proj(torch.randn(3, side * side, 8))
    assert out.shape == (3, side * side // factor ** 2, 16)


def test_forward_by_hand():
    torch.manual_seed(0)
    proj = PixelShuffleProjector(4, 6, factor=2, act="gelu")
    x = torch.randn(2, 16, 4)
    # by hand: gather the 2 x 2 blocks with indexing, then the layers with torch.nn.functional
    idx = torch.tensor([[r * 4 + c for r in (2 * i, 2 * i + 1) for c in (2 * j, 2 * j + 1)]
                        for i in range(2) for j in range(2)])  # (4 blocks, 4 tokens)
    blocks = x[:, idx].reshape(2, 4, 16)
    h = F.layer_norm(blocks, (16,), proj.norm.weight, proj.norm.bias, proj.norm.eps)
    want = F.linear(F.gelu(F.linear(h, proj.linear_1.weight, proj.linear_1.bias)), proj.linear_2.weight,
                    proj.linear_2.bias)
    assert torch.allclose(proj(x), want, atol=1e-6)


def test_builder_spec_and_errors():
    proj = build_projector("pixel_shuffle3x_gelu", 5, 7)
    assert isinstance(proj, PixelShuffleProjector) and proj.factor == 3 and proj.linear_1.in_features == 45
    with pytest.raises(ValueError, match="square grid"):
        PixelShuffleProjector(4, 4, factor=2)(torch.randn(1, 17, 4))  # 16 patches + [CLS]
    with pytest.raises(ValueError, match="divides by 4"):
        PixelShuffleProjector(4, 4, factor=4)(torch.randn(1, 36, 4))
