"""Stage-2 labels and the adaptive threshold against hand computation."""
import pytest
import torch

from d2ext_projects.adaptis.proposal_targets import adaptive_threshold_step, labels_from_scores, point_scores


def test_labels_spread_case_by_hand():
    # IoU spread 0.8 > 0.1: th = 0.95 x 30th percentile of the scores.
    iou = torch.tensor([[0.9, 0.8, 0.5, 0.1]])
    prob = torch.ones(1, 4)
    # sorted scores 0.1 0.5 0.8 0.9: position 0.3 x 3 = 0.9 -> 0.1 + 0.9 x 0.4 = 0.46; th = 0.437
    labels = labels_from_scores(iou, prob, 30.0)
    # good: 0.9, 0.8, 0.5 (min 0.5, max 0.9) -> 0.7 + 0.3 (s - 0.5) / 0.4
    torch.testing.assert_close(labels, torch.tensor([[1.0, 0.925, 0.7, 0.0]]))


def test_labels_flat_case_by_hand():
    # spread 0.05 <= 0.1: th = 0.99 x min score = 0.99 x 0.25; scores = iou x prob
    iou = torch.tensor([[0.5, 0.52, 0.55]])
    prob = torch.tensor([[0.5, 0.5, 0.6]])
    labels = labels_from_scores(iou, prob, 30.0)
    s = [0.25, 0.26, 0.33]  # all above 0.2475: all good
    expected = [0.7 + 0.3 * (v - 0.25) / (0.33 - 0.25) for v in s]
    torch.testing.assert_close(labels, torch.tensor([expected]))
    # the good points' scores within 1e-3 of each other: all 1
    same = labels_from_scores(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.8, 0.8]]), 30.0)
    torch.testing.assert_close(same, torch.ones(1, 2))


def test_images_without_a_usable_iou_are_ignored():
    iou = torch.tensor([[0.9, -1.0, 0.5], [0.0, 0.0, 0.0], [0.3, 0.6, 0.9]])
    labels = labels_from_scores(iou, torch.ones(3, 3), 30.0)
    assert labels[0].eq(-1).all() and labels[1].eq(-1).all()
    assert labels[2].ge(0).all() and labels[2, 2] == 1.0


def test_point_scores_by_hand():
    gt = torch.zeros(1, 2, 2, 3, dtype=torch.bool)
    gt[..., 0, :2] = True  # the object: 2 pixels
    probs = torch.tensor([[[[0.9, 0.2, 0.0], [0.0, 0.0, 0.0]], [[0.9, 0.8, 0.7], [0.0, 0.0, 0.9]]]])
    valid = torch.ones(1, 1, 2, 3, dtype=torch.bool)
    valid[..., 1, 2] = False  # padding: the 0.9 there does not count
    iou, prob = point_scores(probs, gt, valid, thresh=0.5)
    # point 0: pred {(0,0)} -> 1/2; point 1: pred {(0,0),(0,1),(0,2)} -> 2/3
    torch.testing.assert_close(iou, torch.tensor([[0.5, 2 / 3]]))
    torch.testing.assert_close(prob, torch.tensor([[(0.9 + 0.2) / 2, (0.9 + 0.8) / 2]]))
    # nothing predicted and nothing to find: undefined (-1)
    iou, _ = point_scores(torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 2, 3, dtype=torch.bool), valid, 0.5)
    assert iou.item() == -1


def test_adaptive_threshold_steps_towards_the_better_iou():
    # object = left half; probabilities 0.6 there, 0.36 on the right:
    # at t = 0.35 the right half is predicted too (IoU 0.5), at 0.375 it is not (IoU 1).
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[:, :, :2] = True
    probs = torch.where(gt, torch.tensor(0.6), torch.tensor(0.36))
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    new = adaptive_threshold_step(probs, gt, valid, 0.35, step=0.025, momentum=0.99)
    assert new == pytest.approx(0.99 * 0.35 + 0.01 * 0.375)
    # below: 0.325 and 0.35 give the same IoU as 0.375 would not -> step down when it is better
    probs_low = torch.where(gt, torch.tensor(0.34), torch.tensor(0.0))
    assert adaptive_threshold_step(probs_low, gt, valid, 0.35) == pytest.approx(0.99 * 0.35 + 0.01 * 0.325)
    # ties keep the threshold; no ground truth leaves it unchanged
    perfect = gt.float()
    assert adaptive_threshold_step(perfect, gt, valid, 0.35) == pytest.approx(0.35)
    assert adaptive_threshold_step(probs, torch.zeros_like(gt), valid, 0.35) == 0.35
