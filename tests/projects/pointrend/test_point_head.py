"""Point heads against per-point / per-box references."""
import d2ext  # noqa: F401

import pytest
import torch
from torch.nn import functional as F

from d2ext_projects.pointrend.point_head import ImplicitPointHead, StandardPointHead


def test_standard_point_head_is_a_per_point_mlp_with_coarse_at_every_layer():
    torch.manual_seed(0)
    head = StandardPointHead(in_channels=6, coarse_channels=3, num_classes=3, fc_dim=8, num_fc=3).double()
    for p in head.parameters():  # away from the tiny predictor init, so the check is meaningful
        torch.nn.init.normal_(p, std=0.3)
    fine, coarse = torch.randn(2, 6, 5, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    out = head(fine, coarse)
    assert out.shape == (2, 3, 5)
    for r in range(2):
        for p in range(5):
            c = coarse[r, :, p]
            x = torch.cat([fine[r, :, p], c])
            for fc in head.fc_layers:
                x = torch.cat([F.relu(fc.weight[:, :, 0] @ x + fc.bias), c])
            ref = head.predictor.weight[:, :, 0] @ x + head.predictor.bias
            torch.testing.assert_close(out[r, :, p], ref)


def test_standard_point_head_inference_buffer_equals_concatenation_bit_for_bit():
    """Without autograd the hidden layers share one [relu(fc(.)), coarse] buffer instead
    of concatenating at each layer: the same values exactly, also when C != FC_DIM."""
    torch.manual_seed(3)
    for in_channels in (8, 6):
        head = StandardPointHead(in_channels=in_channels, coarse_channels=3, num_classes=3,
                                 fc_dim=8, num_fc=3)
        for p in head.parameters():
            torch.nn.init.normal_(p, std=0.3)
        fine, coarse = torch.randn(4, in_channels, 50), torch.randn(4, 3, 50)
        ref = head(fine, coarse)  # autograd on: concatenation at every layer
        assert ref.requires_grad
        with torch.no_grad():
            out = head(fine, coarse)
        assert torch.equal(out, ref.detach())


def test_standard_point_head_coarse_only_at_input():
    head = StandardPointHead(in_channels=4, coarse_channels=2, num_classes=1, fc_dim=8, num_fc=2,
                             coarse_pred_each_layer=False)
    assert [fc.in_channels for fc in head.fc_layers] == [6, 8] and head.predictor.in_channels == 8
    assert head(torch.randn(3, 4, 7), torch.randn(3, 2, 7)).shape == (3, 1, 7)


def test_implicit_point_head_equals_per_box_mlp_in_detectron2s_layout():
    """params = all weights (layer order, (out, in) row-major), then all biases; the
    input is [position encoding, fine features]; NUM_FC hidden layers + the output."""
    torch.manual_seed(1)
    head = ImplicitPointHead(in_channels=4, num_classes=2, channels=5, num_fc=2, pos_enc_dim=6).double()
    shapes = [(5, 10), (5, 5), (2, 5)]
    assert head.layer_shapes == shapes
    assert head.num_params == sum(o * i for o, i in shapes) + sum(o for o, _ in shapes)
    fine = torch.randn(3, 4, 7, dtype=torch.float64)
    coords = torch.rand(3, 7, 2, dtype=torch.float64)
    params = torch.randn(3, head.num_params, dtype=torch.float64)
    out = head(fine, coords, params)
    assert out.shape == (3, 2, 7)
    num_weights = sum(o * i for o, i in shapes)
    for r in range(3):
        phase = 2 * torch.pi * (2 * coords[r] - 1) @ head.positional_encoding_gaussian_matrix.double()
        x = torch.cat([phase.sin(), phase.cos(), fine[r].T], dim=1)  # (P, 10)
        w_start, b_start = 0, num_weights
        for i, (o, n) in enumerate(shapes):
            w = params[r, w_start : w_start + o * n].reshape(o, n)
            b = params[r, b_start : b_start + o]
            w_start, b_start = w_start + o * n, b_start + o
            x = x @ w.T + b
            if i < len(shapes) - 1:
                x = F.relu(x)
        torch.testing.assert_close(out[r], x.T)


def test_implicit_point_head_without_features_or_encoding():
    head = ImplicitPointHead(in_channels=4, num_classes=1, channels=3, num_fc=1,
                             image_feature_enabled=False, pos_enc_dim=6)
    assert head.layer_shapes == [(3, 6), (1, 3)]
    params = head.initial_params()[None].expand(2, -1)
    assert params.shape == (2, head.num_params)
    assert head(None, torch.rand(2, 9, 2), params).shape == (2, 1, 9)
    # no position input (detectron2's): the features alone
    head = ImplicitPointHead(in_channels=4, num_classes=1, channels=3, num_fc=1, pos_enc_enabled=False)
    assert head.layer_shapes == [(3, 4), (1, 3)]
    assert not hasattr(head, "positional_encoding_gaussian_matrix")
    with pytest.raises(ValueError, match="IMAGE_FEATURE_ENABLED"):
        ImplicitPointHead(in_channels=4, num_classes=1, image_feature_enabled=False, pos_enc_enabled=False)
