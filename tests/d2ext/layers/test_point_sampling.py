"""Point operations against dense references."""
import d2ext  # noqa: F401  (compat first)

import pytest
import torch
import torch.nn.functional as F

from d2ext.layers import (
    binary_uncertainty,
    margin_uncertainty,
    point_sample,
    uncertain_grid_points,
    uncertain_points_with_randomness,
)


def _cell_centres(h, w):
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([(xs.double() + 0.5) / w, (ys.double() + 0.5) / h], dim=-1)
    return coords.reshape(-1, 2), ys.reshape(-1), xs.reshape(-1)


def test_point_sample_at_cell_centres_equals_indexing():
    torch.manual_seed(0)
    feats = torch.randn(3, 4, 5, 7, dtype=torch.float64)
    coords, ys, xs = _cell_centres(5, 7)
    perm = torch.randperm(coords.shape[0])
    coords = coords[perm].unsqueeze(0).expand(3, -1, -1)
    out = point_sample(feats, coords)
    assert out.shape == (3, 4, 35)
    torch.testing.assert_close(out, feats[:, :, ys[perm], xs[perm]])


def test_point_sample_grid_form_and_bilinear_midpoint():
    feats = torch.tensor([[[[0.0, 2.0], [4.0, 6.0]]]])
    # midway between the four cell centres: mean of the four values
    out = point_sample(feats, torch.tensor([[[0.5, 0.5]]]))
    torch.testing.assert_close(out, torch.tensor([[[3.0]]]))
    # midway between the two top centres (x from 0.25 to 0.75, y = 0.25)
    torch.testing.assert_close(point_sample(feats, torch.tensor([[[0.5, 0.25]]])), torch.tensor([[[1.0]]]))
    grid = torch.tensor([[[[0.25, 0.25], [0.75, 0.25]], [[0.25, 0.75], [0.75, 0.75]]]])
    torch.testing.assert_close(point_sample(feats, grid), feats)


def test_point_sample_matches_dense_upsampling():
    """Sampling at the centres of a finer grid equals bilinear interpolation of the map."""
    torch.manual_seed(1)
    feats = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    coords, _, _ = _cell_centres(12, 12)
    out = point_sample(feats, coords.unsqueeze(0).expand(2, -1, -1))
    dense = F.interpolate(feats, scale_factor=2, mode="bilinear", align_corners=False)
    # inside the border band the two agree (grid_sample pads with zeros, interpolate clamps)
    torch.testing.assert_close(out.reshape(2, 3, 12, 12)[..., 1:-1, 1:-1], dense[..., 1:-1, 1:-1])


def test_point_sample_dtype_of_coords_follows_features():
    feats = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    out = point_sample(feats, torch.rand(1, 4, 2, dtype=torch.float32))
    assert out.dtype == torch.float64


def test_uncertainties():
    logits = torch.tensor([[[-2.0, 0.1, 3.0]]])
    torch.testing.assert_close(binary_uncertainty(logits), torch.tensor([[[-2.0, -0.1, -3.0]]]))
    multi = torch.tensor([[[1.0, 5.0], [3.0, 0.0], [2.0, 4.5]]])  # (1, C=3, 2)
    torch.testing.assert_close(margin_uncertainty(multi), torch.tensor([[[-1.0, -0.5]]]))
    with pytest.raises(ValueError, match="2 classes"):
        margin_uncertainty(torch.zeros(1, 1, 2))


def test_grid_selection_equals_sort_of_dense_map():
    torch.manual_seed(2)
    n, h, w, p = 4, 9, 11, 20
    unc = torch.randn(n, 1, h, w)  # distinct values almost surely
    idx, coords = uncertain_grid_points(unc, p)
    assert idx.shape == (n, p) and coords.shape == (n, p, 2)
    ref = unc.reshape(n, -1).argsort(dim=1, descending=True)[:, :p]
    assert torch.equal(idx, ref)
    # coordinates are the centres of the selected cells: sampling there returns the map values
    sampled = point_sample(unc, coords)[:, 0]
    torch.testing.assert_close(sampled, unc.reshape(n, -1).gather(1, idx))
    torch.testing.assert_close(coords[..., 0], (idx % w + 0.5) / w)
    torch.testing.assert_close(coords[..., 1], (idx // w + 0.5) / h)


def test_grid_selection_clips_to_grid_size():
    idx, coords = uncertain_grid_points(torch.randn(2, 1, 3, 3), 100)
    assert idx.shape == (2, 9)
    assert sorted(idx[0].tolist()) == list(range(9))


def test_grid_selection_empty_batch():
    idx, coords = uncertain_grid_points(torch.zeros(0, 1, 4, 4), 5)
    assert idx.shape == (0, 5) and coords.shape == (0, 5, 2)


def test_random_selection_uses_uncertainty_of_sampled_logits():
    """The kept points are exactly the beta*P most uncertain of the k*P drawn ones,
    with uncertainty computed from logits interpolated at those points."""
    torch.manual_seed(3)
    logits = torch.randn(5, 1, 7, 7)
    num_points, k, beta = 16, 3, 0.75

    torch.manual_seed(10)
    coords = uncertain_points_with_randomness(logits, binary_uncertainty, num_points, k, beta)
    torch.manual_seed(10)
    drawn = torch.rand(5, num_points * k, 2)
    tail = torch.rand(5, num_points - 12, 2)

    assert coords.shape == (5, num_points, 2)
    # reference: per map, sort the drawn points by -|interpolated logit|
    for i in range(5):
        unc = -point_sample(logits[i : i + 1], drawn[i : i + 1]).abs()[0, 0]
        keep = drawn[i][unc.argsort(descending=True)[:12]]
        torch.testing.assert_close(coords[i, :12], keep)
    torch.testing.assert_close(coords[:, 12:], tail)


def test_random_selection_targets_the_boundary():
    # a ramp crossing zero at x = 0.5: the kept points are the third of the drawn
    # ones closest to the zero crossing, so on average within ~1/12 of it
    xs = (torch.arange(16.0) + 0.5) / 16
    logits = (20 * (xs - 0.5)).expand(2, 1, 16, 16).contiguous()
    torch.manual_seed(4)
    coords = uncertain_points_with_randomness(logits, binary_uncertainty, 64, 3, 1.0)
    assert (coords[..., 0] - 0.5).abs().max() < 0.25
    assert (coords[..., 0] - 0.5).abs().mean() < 0.12
    assert coords.min() >= 0 and coords.max() <= 1


def test_random_selection_edge_ratios():
    logits = torch.randn(2, 1, 4, 4)
    coords = uncertain_points_with_randomness(logits, binary_uncertainty, 10, 1, 0.0)
    assert coords.shape == (2, 10, 2)
    coords = uncertain_points_with_randomness(torch.zeros(0, 1, 4, 4), binary_uncertainty, 10, 3, 0.75)
    assert coords.shape == (0, 10, 2)
    with pytest.raises(ValueError, match="oversample_ratio"):
        uncertain_points_with_randomness(logits, binary_uncertainty, 10, 0.5, 0.75)
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        uncertain_points_with_randomness(logits, binary_uncertainty, 10, 3, 1.5)


def test_random_selection_accepts_flat_uncertainty():
    logits = torch.randn(3, 2, 5, 5)
    coords = uncertain_points_with_randomness(
        logits, lambda l: margin_uncertainty(l)[:, 0], 8, 2, 0.5
    )
    assert coords.shape == (3, 8, 2)
