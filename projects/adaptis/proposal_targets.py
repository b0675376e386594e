"""Stage-2 targets of the proposal head (the reference's AdaptISProposalsLossIoU).

All K points of an image lie on one object. Each point is scored by how well
the (frozen) instance head segments that object from it: IoU of its mask,
binarised at an adaptive threshold, with the ground truth, times its mean
probability inside the ground truth. The better points become positives with
soft labels, the worse ones negatives.

Shapes: B images, K points per image, (H, W) the input size, P = B * K.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist

__all__ = ["adaptive_threshold_step", "labels_from_scores", "point_scores", "proposal_labels"]

# Constants of the reference's labelling rule.
BAD_SCALE = 0.95  # threshold = 0.95 x the BAD_PERCENTILE-th percentile of the scores...
FLAT_SCALE = 0.99  # ... or 0.99 x their minimum when the IoUs are this close:
FLAT_SPREAD = 0.1  # max IoU - min IoU <= 0.1
SOFT_BASE, SOFT_RANGE = 0.7, 0.3  # good points: 0.7 + 0.3 x their score normalised over the good ones
MIN_SCORE_RANGE = 1e-3  # good points' scores this close: all labelled 1
MIN_BEST_IOU = 1e-5  # an image whose best IoU is below this gives no labels


def _iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool, bool -> (...) IoU, -1 where the union is empty."""
    inter = (pred & gt).sum(dim=(-2, -1)).float()
    union = (pred | gt).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(union, -1.0))


@torch.no_grad()
def point_scores(
    probs: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, thresh: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Args:
        probs: (B, K, H, W) mask probabilities; gt: (B, K, H, W) bool;
        valid: broadcastable to them, False in padding; thresh: binarisation.

    Returns:
        iou (B, K) (-1 where prediction and ground truth are both empty), and
        prob_score (B, K) = sum(p * gt) / max(|gt|, 1).
    """
    gt = gt & valid
    iou = _iou((probs > thresh) & valid, gt)
    prob_score = (probs * gt).sum(dim=(-2, -1)) / gt.sum(dim=(-2, -1)).clamp(min=1)
    return iou, prob_score


@torch.no_grad()
def labels_from_scores(iou: torch.Tensor, prob_score: torch.Tensor, bad_percentile: float = 30.0) -> torch.Tensor:
    """(B, K) IoUs and probability scores -> (B, K) soft labels, -1 where ignored.

    Per image: score = iou * prob_score; threshold th = 0.95 x the
    ``bad_percentile``-th percentile of the scores (linear interpolation, as
    numpy's), or 0.99 x their minimum when max IoU - min IoU <= 0.1; points
    with score > th get 0.7 + 0.3 (score - min) / (max - min) over those
    points (1 when that range is <= 1e-3), the rest 0. An image with an
    undefined IoU or a best IoU below 1e-5 is ignored entirely.
    """
    score = iou * prob_score
    spread = iou.max(dim=1).values - iou.min(dim=1).values
    th = torch.where(
        spread > FLAT_SPREAD,
        BAD_SCALE * torch.quantile(score, bad_percentile / 100.0, dim=1),
        FLAT_SCALE * score.min(dim=1).values,
    )
    good = score > th[:, None]
    inf = torch.full_like(score, float("inf"))
    gmin = torch.where(good, score, inf).min(dim=1, keepdim=True).values
    gmax = torch.where(good, score, -inf).max(dim=1, keepdim=True).values
    span = gmax - gmin
    spread_ok = span > MIN_SCORE_RANGE
    soft = SOFT_BASE + SOFT_RANGE * (score - gmin) / torch.where(spread_ok, span, torch.ones_like(span))
    labels = torch.where(good, torch.where(spread_ok, soft, torch.ones_like(score)), torch.zeros_like(score))
    ignored = (iou.min(dim=1).values < 0) | (iou.max(dim=1).values < MIN_BEST_IOU)
    return torch.where(ignored[:, None], torch.full_like(labels, -1.0), labels)


def proposal_labels(
    probs: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, thresh: float, bad_percentile: float = 30.0
) -> torch.Tensor:
    """:func:`point_scores` then :func:`labels_from_scores`: (B, K) labels."""
    return labels_from_scores(*point_scores(probs, gt, valid, thresh), bad_percentile)


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def adaptive_threshold_step(
    probs: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor,
    thresh: float,
    step: float = 0.025,
    momentum: float = 0.99,
) -> float:
    """One EMA step of the binarisation threshold (the reference's AdaptiveIoU).

    Of t, t - step and t + step, the one with the highest mean IoU over the
    samples whose union is not empty (the first on ties, so t stays when
    nothing is better) is ``best``; returns momentum * t + (1 - momentum) * best.
    Unchanged when no sample has ground truth. The IoU sums and counts are
    summed over all processes first, so every process takes the same step.

    Args:
        probs: (P, H, W); gt: (P, H, W) bool; valid: broadcastable, False in padding.
    """
    candidates = probs.new_tensor([thresh, thresh - step, thresh + step])
    gt = gt & valid
    pred = (probs[None] > candidates[:, None, None, None]) & valid  # (3, P, H, W)
    iou = _iou(pred, gt[None].expand_as(pred))  # (3, P)
    counted = iou >= 0
    stats = torch.cat(
        [
            torch.where(counted, iou, torch.zeros_like(iou)).sum(dim=1),
            counted.sum(dim=1).to(iou.dtype),
            gt.sum().to(iou.dtype)[None],
        ]
    )
    if _world_size() > 1:
        dist.all_reduce(stats)
    sums, counts, gt_area = stats[:3], stats[3:6], stats[6]
    if gt_area <= 0:
        return float(thresh)
    means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, -1.0))
    best = 0
    for j in (1, 2):  # strictly better only: ties keep the current threshold
        if means[j] > means[best]:
            best = j
    return float(momentum * thresh + (1.0 - momentum) * float(candidates[best]))
