"""R2O's loss pieces against hand computations: mask pooling, the mask-pair
filter, 2 - 2 cos, and the symmetrised mean over mask pairs."""
import math

import pytest
import torch

from d2ext_projects.r2o.loss import mask_pool, r2o_loss, regression_loss, valid_mask_pairs


def test_mask_pool_is_the_weighted_mean_and_the_area_fraction():
    # One image, 2 channels on a 2 x 2 grid: channel 0 = 1, 2, 3, 4 (row-major), channel 1 = 10 x that.
    base = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    features = torch.stack([base, 10 * base])[None]  # (1, 2, 2, 2)
    masks = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 0.0]],  # the top-left cell
            [[0.5, 0.5], [0.0, 0.0]],  # half of each top cell
            [[1.0, 1.0], [1.0, 1.0]],  # everything
            [[0.0, 0.0], [0.0, 0.0]],  # empty
        ]
    )[None]  # (1, 4, 2, 2)
    pooled, area = mask_pool(features, masks)
    expected = torch.tensor([[1.0, 10.0], [1.5, 15.0], [2.5, 25.0], [0.0, 0.0]])
    torch.testing.assert_close(pooled[0], expected)
    torch.testing.assert_close(area[0], torch.tensor([0.25, 0.25, 1.0, 0.0]))
    assert torch.isfinite(pooled).all()


def test_mask_pool_rejects_mismatched_grids():
    with pytest.raises(ValueError, match="differ"):
        mask_pool(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 4, 4))


def test_valid_pairs_need_the_area_in_both_views():
    a1 = torch.tensor([[0.5, 0.005, 0.02, 0.0]])
    a2 = torch.tensor([[0.5, 0.5, 0.01, 0.3]])
    assert valid_mask_pairs(a1, a2, 0.01).tolist() == [[True, False, True, False]]


def test_regression_loss_is_two_minus_two_cosine():
    pred = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    target = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    expected = torch.tensor([2.0, 0.0, 2.0 - 2.0 / math.sqrt(2.0), 4.0])
    torch.testing.assert_close(regression_loss(pred, target), expected)


def test_r2o_loss_averages_both_directions_over_masks():
    # Two masks. View 1 predictions vs view 2 targets, and the swap.
    p1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p2 = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    t1 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    t2 = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    # l(p1, t2) = [0, 2]; l(p2, t1) = [2 - sqrt(2), 2]
    expected = (0.0 + 2.0 + (2.0 - math.sqrt(2.0)) + 2.0) / 4.0
    assert float(r2o_loss(p1, p2, t1, t2).detach()) == pytest.approx(expected)


def test_r2o_loss_sends_no_gradient_to_the_targets():
    p1, p2 = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    t1, t2 = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    r2o_loss(p1, p2, t1, t2).backward()
    assert p1.grad is not None and p2.grad is not None
    assert t1.grad is None and t2.grad is None


def test_r2o_loss_of_identical_predictions_and_targets_is_zero():
    x, y = torch.randn(5, 8), torch.randn(5, 8)
    assert float(r2o_loss(x, y, y, x)) == pytest.approx(0.0, abs=1e-6)


def test_r2o_loss_without_masks_is_zero_and_differentiable():
    p = torch.zeros(0, 4, requires_grad=True)
    loss = r2o_loss(p, p, torch.zeros(0, 4), torch.zeros(0, 4))
    assert float(loss.detach()) == 0.0
    loss.backward()
