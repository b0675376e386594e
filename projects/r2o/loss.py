"""R2O's loss: mask pooling of feature maps and the symmetrised BYOL regression loss.

Shapes: B images, K masks per image, C channels, (h, w) a view's feature grid,
M masks that take part in the loss (present in both views), D projection channels.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["mask_pool", "r2o_loss", "regression_loss", "valid_mask_pairs"]


def mask_pool(features: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean of the features under each soft mask.

    Args:
        features: (B, C, h, w).
        masks: (B, K, h, w) soft masks in [0, 1].
        eps: floor of a mask's area in the division (an empty mask pools to 0, not NaN).

    Returns:
        pooled: (B, K, C), sum(mask * feature) / sum(mask).
        area: (B, K), the mask's area as a fraction of the h x w grid.

    The reference divides by max(area in cells, 1), which shrinks the pooled
    vector of a mask smaller than one cell; here it is always the weighted mean.
    """
    if features.shape[0] != masks.shape[0] or features.shape[-2:] != masks.shape[-2:]:
        raise ValueError(
            f"mask_pool: features {tuple(features.shape)} and masks {tuple(masks.shape)} differ in B or (h, w)"
        )
    masks = masks.to(features.dtype)
    weight_sum = masks.sum(dim=(2, 3))  # (B, K)
    pooled = torch.einsum("bkhw,bchw->bkc", masks, features) / weight_sum.clamp_min(eps)[..., None]
    return pooled, weight_sum / float(masks.shape[-2] * masks.shape[-1])


def valid_mask_pairs(area1: torch.Tensor, area2: torch.Tensor, min_area: float) -> torch.Tensor:
    """(B, K) bool: masks covering at least ``min_area`` of both views' grids
    (``area1``, ``area2``: (B, K) fractions from :func:`mask_pool`)."""
    return (area1 >= min_area) & (area2 >= min_area)


def regression_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, D), (N, D) -> (N,): 2 - 2 cos(pred, target), i.e. the squared distance
    of the L2-normalised vectors (in [0, 4]). The target gets no gradient."""
    pred = F.normalize(pred, dim=-1)
    target = F.normalize(target.detach(), dim=-1)
    return 2.0 - 2.0 * (pred * target).sum(dim=-1)


def r2o_loss(
    pred1: torch.Tensor, pred2: torch.Tensor, target1: torch.Tensor, target2: torch.Tensor
) -> torch.Tensor:
    """Symmetrised loss over M mask pairs, a scalar.

    Args:
        pred1, pred2: (M, D) online predictions of the masks in view 1 / view 2.
        target1, target2: (M, D) target projections of the same masks in view 1 / view 2.

    Returns:
        mean over the M masks of (l(pred1, target2) + l(pred2, target1)) / 2, with
        l = :func:`regression_loss`: the two directions are AVERAGED, as the
        reference does (it divides the sum over both directions by twice the
        mask count); BYOL's paper sums them, which is twice this value.
        M = 0 gives 0, still connected to the inputs' graph.
    """
    if pred1.shape[0] == 0:
        return pred1.sum() * 0.0
    both = torch.cat([regression_loss(pred1, target2), regression_loss(pred2, target1)])
    return both.mean()
