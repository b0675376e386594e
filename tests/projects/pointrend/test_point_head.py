"""Point heads against per-point / per-box references."""
import d2ext  # noqa: F401

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


def test_standard_point_head_coarse_only_at_input():
    head = StandardPointHead(in_channels=4, coarse_channels=2, num_classes=1, fc_dim=8, num_fc=2,
                             coarse_pred_each_layer=False)
    assert [fc.in_channels for fc in head.fc_layers] == [6, 8] and head.predictor.in_channels == 8
    assert head(torch.randn(3, 4, 7), torch.randn(3, 2, 7)).shape == (3, 1, 7)


def test_implicit_point_head_equals_per_box_mlp():
    torch.manual_seed(1)
    head = ImplicitPointHead(in_channels=4, num_classes=2, channels=5, num_layers=3, pos_enc_dim=6).double()
    assert head.num_params == (10 * 5 + 5) + (5 * 5 + 5) + (5 * 2 + 2)
    fine = torch.randn(3, 4, 7, dtype=torch.float64)
    coords = torch.rand(3, 7, 2, dtype=torch.float64)
    params = torch.randn(3, head.num_params, dtype=torch.float64)
    out = head(fine, coords, params)
    assert out.shape == (3, 2, 7)
    for r in range(3):
        phase = 2 * torch.pi * (2 * coords[r] - 1) @ head.positional_encoding_gaussian_matrix.double()
        x = torch.cat([fine[r].T, phase.sin(), phase.cos()], dim=1)  # (P, 10)
        start = 0
        for i, (o, n) in enumerate(head.layer_shapes):
            w = params[r, start : start + o * n].reshape(o, n)
            b = params[r, start + o * n : start + o * n + o]
            start += o * n + o
            x = x @ w.T + b
            if i < 2:
                x = F.relu(x)
        torch.testing.assert_close(out[r], x.T)


def test_implicit_point_head_without_features_or_encoding():
    head = ImplicitPointHead(in_channels=4, num_classes=1, channels=3, num_layers=2,
                             image_feature_enabled=False, pos_enc_enabled=False)
    assert head.layer_shapes == [(3, 2), (1, 3)]
    params = head.initial_params()[None].expand(2, -1)
    assert params.shape == (2, head.num_params)
    assert head(None, torch.rand(2, 9, 2), params).shape == (2, 1, 9)
