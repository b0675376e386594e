"""AdaptIS losses against hand computation, pixel by pixel in Python floats."""
import math

import torch

from d2ext_projects.adaptis.losses import (
    normalized_sigmoid_focal_loss,
    normalized_softmax_focal_loss,
    proposal_loss,
)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_normalized_sigmoid_focal_loss_by_hand():
    logits = [[0.5, -1.0], [2.0, 0.3]]
    target = [[True, False], [False, True]]
    valid = [[True, True], [True, False]]  # the last pixel is padding
    alpha, gamma = 0.25, 2.0
    terms, betas, n = [], [], 0
    for i in range(2):
        for j in range(2):
            if not valid[i][j]:
                continue
            n += 1
            p = _sigmoid(logits[i][j])
            pt = p if target[i][j] else 1 - p
            a = alpha if target[i][j] else 1 - alpha
            beta = (1 - pt) ** gamma
            betas.append(beta)
            terms.append(-a * beta * math.log(pt))
    expected = sum(terms) * (n / sum(betas)) / n
    out = normalized_sigmoid_focal_loss(
        torch.tensor([logits]), torch.tensor([target]), torch.tensor([valid]), alpha, gamma
    )
    assert out.shape == (1,)
    assert math.isclose(out.item(), expected, rel_tol=1e-5)


def test_sigmoid_focal_rescaling_is_a_constant():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 5, requires_grad=True)
    target = torch.rand(3, 5, 5) > 0.6
    valid = torch.ones(1, 5, 5, dtype=torch.bool)
    normalized_sigmoid_focal_loss(logits, target, valid, 0.5, 2.0).sum().backward()
    # the same loss with the per-sample multiplier computed beforehand, outside autograd
    x = logits.detach().clone().requires_grad_()
    p = torch.sigmoid(x)
    pt = torch.where(target, p, 1 - p)
    beta = (1 - pt) ** 2
    mult = (25 / beta.sum(dim=(1, 2))).detach()
    manual = (-(0.5 * beta * torch.log(pt)).sum(dim=(1, 2)) * mult / 25).sum()
    manual.backward()
    torch.testing.assert_close(logits.grad, x.grad, rtol=1e-4, atol=1e-6)


def test_normalized_softmax_focal_loss_by_hand():
    logits = [[[1.0, 0.0], [0.5, 2.0]], [[0.0, 1.0], [0.5, -1.0]], [[-1.0, 0.0], [3.0, 0.0]]]  # (K=3, 2, 2)
    labels = [[0, 1], [255, 2]]
    gamma = 1.0
    terms, betas = [], []
    for i in range(2):
        for j in range(2):
            if labels[i][j] == 255:
                continue
            z = [logits[k][i][j] for k in range(3)]
            pt = math.exp(z[labels[i][j]]) / sum(math.exp(v) for v in z)
            beta = (1 - pt) ** gamma
            betas.append(beta)
            terms.append(-beta * math.log(pt))
    n = len(terms)
    expected = sum(terms) * (n / sum(betas)) / n
    out = normalized_softmax_focal_loss(torch.tensor([logits]), torch.tensor([labels]), ignore_label=255, gamma=gamma)
    assert math.isclose(out.item(), expected, rel_tol=1e-5)
    # an image without any label gives 0, not NaN
    empty = normalized_softmax_focal_loss(torch.tensor([logits]), torch.full((1, 2, 2), 255), 255, gamma)
    assert empty.item() == 0.0


def test_proposal_loss_by_hand():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    labels = torch.tensor([[1.0, 0.7], [-1.0, 0.0]])  # one ignored
    bce = [-math.log(0.5), -(0.7 * math.log(_sigmoid(2.0)) + 0.3 * math.log(1 - _sigmoid(2.0))), -math.log(1 - _sigmoid(1.0))]
    assert math.isclose(proposal_loss(logits, labels).item(), sum(bce) / 3, rel_tol=1e-5)
    assert proposal_loss(logits, torch.full((2, 2), -1.0)).item() == 0.0
