"""Mask losses of MaskFormer, per mask and for all (prediction, target) pairs at once.

Shapes: M masks (a prediction and its target), N predictions, K targets,
P pixels or points per mask. Logits are raw (before sigmoid); targets are in
[0, 1] (binary, or the fraction of a low-resolution pixel a mask covers).

The focal loss is written linearly in the target,
``t * FL(x, 1) + (1 - t) * FL(x, 0)``: the standard sigmoid focal loss for
binary targets, and the form in which the pairwise cost is one matrix
product. ``pairwise_*(x, t)[i, j] == *(x[i], t[j])`` holds exactly.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["MASK_LOSSES", "dice_loss", "mask_loss_params", "pairwise_dice", "pairwise_sigmoid_focal", "sigmoid_focal_loss"]

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
# The mask loss of each official code base as (alpha, gamma) of the focal form:
# MaskFormer's sigmoid focal loss, Mask2Former's sigmoid binary cross-entropy
# (alpha < 0: no class weighting, gamma 0: no focusing, i.e. -log p / -log(1 - p)).
MASK_LOSSES = {"focal": (FOCAL_ALPHA, FOCAL_GAMMA), "bce": (-1.0, 0.0)}


def mask_loss_params(name: str) -> Tuple[float, float]:
    """(alpha, gamma) of MASK_LOSSES[name]; a clear error for another name."""
    if name not in MASK_LOSSES:
        raise ValueError(f"mask loss {name!r}: expected one of {sorted(MASK_LOSSES)}")
    return MASK_LOSSES[name]


def _focal_terms(logits: torch.Tensor, alpha: float, gamma: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel focal loss against target 1 and against target 0, each logits' shape."""
    prob = logits.sigmoid()
    neg_log = F.softplus(logits)  # -log(1 - p)
    pos = (1 - prob) ** gamma * (neg_log - logits)  # -log(p) = softplus(-x) = softplus(x) - x
    neg = prob**gamma * neg_log
    if alpha >= 0:
        pos = alpha * pos
        neg = (1 - alpha) * neg
    return pos, neg


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """(M, P), (M, P) -> (M,): focal loss averaged over the P pixels of each mask."""
    pos, neg = _focal_terms(logits, alpha, gamma)
    targets = targets.to(logits.dtype)
    return (targets * pos + (1 - targets) * neg).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(M, P), (M, P) -> (M,): 1 - (2 |p t| + 1) / (|p| + |t| + 1), p = sigmoid(logits)."""
    prob = logits.sigmoid()
    targets = targets.to(prob.dtype)
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return 1 - (numerator + 1) / (denominator + 1)


def pairwise_sigmoid_focal(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA
) -> torch.Tensor:
    """(N, P), (K, P) -> (N, K): sigmoid_focal_loss of every prediction with every target."""
    pos, neg = _focal_terms(logits, alpha, gamma)
    targets = targets.to(logits.dtype)
    # pos @ t.T + neg @ (1 - t).T, with one matrix product
    cost = (pos - neg) @ targets.T + neg.sum(-1, keepdim=True)
    return cost / logits.shape[-1]


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, P), (K, P) -> (N, K): dice_loss of every prediction with every target."""
    prob = logits.sigmoid()
    targets = targets.to(prob.dtype)
    numerator = 2 * prob @ targets.T
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)
