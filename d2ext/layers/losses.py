"""Losses used by more than one project."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_cross_entropy"]


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_value: int) -> torch.Tensor:
    """Mean cross-entropy over the entries whose label is not ``ignore_value``.

    Args:
        logits: (N, K, ...) scores, e.g. (N, K, H, W) per pixel or (N, K, P) per point.
        labels: (N, ...) in [0, K) or ``ignore_value``.

    Returns:
        a scalar; 0 (still connected to ``logits`` for autograd, with zero
        gradient) when every entry is ignored, where ``F.cross_entropy``'s mean
        would be NaN. Computed in float32, so half-precision logits (AMP) do not
        overflow the sum.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_value, reduction="sum")
    return total / (labels != ignore_value).sum().clamp(min=1)
