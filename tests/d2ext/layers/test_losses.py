"""d2ext.layers.masked_cross_entropy (PointRend's point and coarse losses, ICNet's
cascade guidance) against hand-computed values and torch's mean cross-entropy."""
import math

import pytest
import torch
import torch.nn.functional as F

from d2ext.layers import masked_cross_entropy

IGNORE = 255


def test_by_hand():
    # Two classes, the same logits everywhere: p(class 1) = 3/4, so a pixel
    # labelled 1 costs ln(4/3) and a pixel labelled 0 costs ln(4).
    logits = torch.zeros(1, 2, 2, 2)
    logits[:, 1] = math.log(3.0)
    labels = torch.tensor([[[1, 0], [IGNORE, 1]]])
    loss = masked_cross_entropy(logits, labels, IGNORE)
    assert loss.item() == pytest.approx((2 * math.log(4 / 3) + math.log(4)) / 3, rel=1e-6)


@pytest.mark.parametrize("shape", [(2, 5, 10), (2, 5, 3, 4)])  # per point (N, K, P), per pixel
def test_equals_torch_mean_when_something_is_labelled(shape):
    logits = torch.randn(shape)
    labels = torch.randint(0, 5, (shape[0], *shape[2:]))
    labels.view(-1)[::3] = IGNORE
    ref = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    torch.testing.assert_close(masked_cross_entropy(logits, labels, IGNORE), ref)


def test_all_ignored_gives_zero_with_zero_gradient():
    logits = torch.randn(2, 5, 10, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((2, 10), IGNORE), IGNORE)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_half_precision_logits_are_summed_in_float32():
    logits = torch.randn(1, 3, 64, 64).half()
    labels = torch.randint(0, 3, (1, 64, 64))
    loss = masked_cross_entropy(logits, labels, IGNORE)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), labels))
