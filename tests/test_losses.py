"""clip_loss and siglip_loss against hand computations (plain Python math) on toy matrices."""
import math

import pytest
import torch

from minivlm.losses import clip_loss, siglip_loss

L2 = [[2.0, -1.0], [0.5, 1.5]]   # texts x images, text i belongs with image i


def log_softmax_at(row, i):
    return row[i] - math.log(sum(math.exp(v) for v in row))


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_clip_loss_by_hand():
    rows = L2
    cols = [[L2[0][0], L2[1][0]], [L2[0][1], L2[1][1]]]
    text_ce = -(log_softmax_at(rows[0], 0) + log_softmax_at(rows[1], 1)) / 2
    image_ce = -(log_softmax_at(cols[0], 0) + log_softmax_at(cols[1], 1)) / 2
    assert clip_loss(torch.tensor(L2)).item() == pytest.approx((text_ce + image_ce) / 2, abs=1e-6)


def test_siglip_loss_by_hand():
    # +1 labels on the diagonal, -1 off it; summed over the 4 pairs, divided by the batch size 2.
    total = (log_sigmoid(L2[0][0]) + log_sigmoid(-L2[0][1]) + log_sigmoid(-L2[1][0]) + log_sigmoid(L2[1][1]))
    assert siglip_loss(torch.tensor(L2)).item() == pytest.approx(-total / 2, abs=1e-6)


@pytest.mark.parametrize("loss", [clip_loss, siglip_loss])
def test_symmetric_in_texts_and_images(loss):
    logits = torch.randn(5, 5)
    assert loss(logits).item() == pytest.approx(loss(logits.t()).item(), abs=1e-6)


@pytest.mark.parametrize("loss", [clip_loss, siglip_loss])
def test_alignment_lowers_the_loss(loss):
    n = 4
    aligned = 20 * torch.eye(n) - 10          # own pair +10, others -10
    shuffled = aligned[torch.tensor([1, 2, 3, 0])]  # every text prefers another's image
    assert loss(aligned).item() < 1e-3
    assert loss(shuffled).item() > math.log(n)


def test_siglip_bias_sign():
    # All cosines 0: the logits are the bias. With n - 1 negatives per positive a negative bias is
    # right for most pairs: loss(b) = -(n log s(b) + n(n-1) log s(-b)) / n.
    n = 6
    for b in (-10.0, -2.0, 0.0, 3.0):
        by_hand = -(n * log_sigmoid(b) + n * (n - 1) * log_sigmoid(-b)) / n
        assert siglip_loss(torch.full((n, n), b)).item() == pytest.approx(by_hand, rel=1e-5)
    assert siglip_loss(torch.full((n, n), -2.0)) < siglip_loss(torch.full((n, n), 2.0))


@pytest.mark.parametrize("loss", [clip_loss, siglip_loss])
def test_normalised_per_example(loss):
    # Two copies of a batch side by side, cross pairs certainly negative: each text faces the same
    # problem as before, so a loss normalised by the batch size (not the number of pairs) is unchanged.
    logits = torch.randn(3, 3)
    far = torch.full((3, 3), -60.0)
    doubled = torch.cat([torch.cat([logits, far], 1), torch.cat([far, logits], 1)], 0)  # (6, 6)
    assert loss(doubled).item() == pytest.approx(loss(logits).item(), abs=1e-5)


@pytest.mark.parametrize("loss", [clip_loss, siglip_loss])
def test_needs_square_matrix(loss):
    with pytest.raises(ValueError, match="square"):
        loss(torch.randn(3, 4))
