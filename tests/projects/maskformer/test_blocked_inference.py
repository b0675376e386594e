"""The CPU inference fast paths equal the plain computations they replace."""
import pytest
import torch
import torch.nn.functional as F

from d2ext_projects.maskformer.inference import semantic_inference, upsampled_semantic_inference
from d2ext_projects.maskformer.pixel_decoder import add_upsampled_nearest


def _reference(mask_cls, mask_pred, size, crop):
    masks = F.interpolate(mask_pred[None], size=size, mode="bilinear", align_corners=False)[0]
    prob = F.softmax(mask_cls, dim=-1)[:, :-1]
    return torch.einsum("qc,qhw->chw", prob, masks[:, : crop[0], : crop[1]].sigmoid())


@pytest.mark.parametrize(
    "q,k,low,size,crop",
    [(7, 5, (13, 17), (52, 68), (50, 61)), (5, 3, (8, 8), (37, 29), (37, 29)), (4, 6, (40, 64), (160, 256), (160, 256))],
)
def test_upsampled_semantic_inference_equals_upsample_then_einsum(q, k, low, size, crop):
    g = torch.Generator().manual_seed(0)
    mask_cls, mask_pred = torch.randn(q, k + 1, generator=g), 3 * torch.randn(q, *low, generator=g)
    with torch.no_grad():
        got = upsampled_semantic_inference(mask_cls, mask_pred, size, crop)
    ref = _reference(mask_cls, mask_pred, size, crop)
    assert got.shape == (k, *crop)
    assert (got - ref).abs().max() < 1e-5


def test_blocked_semantic_inference_equals_einsum_and_keeps_gradients():
    g = torch.Generator().manual_seed(1)
    mask_cls, mask_pred = torch.randn(6, 4, generator=g), torch.randn(6, 70, 90, generator=g)
    ref = torch.einsum("qc,qhw->chw", F.softmax(mask_cls, -1)[:, :-1], mask_pred.sigmoid())
    with torch.no_grad():
        assert (semantic_inference(mask_cls, mask_pred) - ref).abs().max() < 1e-6
    mask_pred.requires_grad_(True)
    semantic_inference(mask_cls, mask_pred).sum().backward()  # the einsum path
    assert mask_pred.grad is not None and mask_pred.grad.abs().sum() > 0


@pytest.mark.parametrize("x_size,y_size", [((8, 6), (4, 3)), ((9, 6), (5, 3))])
def test_add_upsampled_nearest_equals_interpolate(x_size, y_size):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 3, *x_size, generator=g), torch.randn(2, 3, *y_size, generator=g)
    ref = x + F.interpolate(y, size=x_size, mode="nearest")
    with torch.no_grad():
        assert torch.equal(add_upsampled_nearest(x.clone(), y), ref)
