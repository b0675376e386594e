"""Cascade label guidance: cross-entropy at several resolutions against labels
downsampled to each.

A label map (N, H, W) is downsampled to (N, h, w) by taking, in each cell of
an h x w grid over it, the label at the cell's centre: row
``floor((i + 0.5) * H / h)`` (the pixel just below and right of the centre when
the cell has an even side), column likewise. Labels are never blended, so the
ignore label stays the ignore label.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch

from d2ext.layers import masked_cross_entropy

__all__ = ["downsample_labels", "cascade_guidance_losses"]


def _centre_indices(full: int, size: int, device: torch.device) -> torch.Tensor:
    idx = ((torch.arange(size, device=device, dtype=torch.float64) + 0.5) * (full / size)).floor()
    return idx.long().clamp_(max=full - 1)


def downsample_labels(labels: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(N, H, W) integer labels -> (N, h, w): the label at the centre of each cell."""
    rows = _centre_indices(labels.shape[-2], size[0], labels.device)
    cols = _centre_indices(labels.shape[-1], size[1], labels.device)
    return labels.index_select(-2, rows).index_select(-1, cols)


def cascade_guidance_losses(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    weights: Sequence[float],
    names: Sequence[str],
    ignore_value: int,
) -> Dict[str, torch.Tensor]:
    """Weighted cross-entropy of each level against the labels downsampled to its size.

    Args:
        logits: one (N, K, h_i, w_i) tensor per level.
        labels: (N, H, W) at full (padded) resolution.
        weights, names: one per level; the loss of level i is ``weights[i] * CE_i``
            under the key ``names[i]``.
    """
    if not len(logits) == len(weights) == len(names):
        raise ValueError(
            f"need one weight and one name per level: {len(logits)} levels, "
            f"{len(weights)} weights, {len(names)} names"
        )
    losses = {}
    for level_logits, weight, name in zip(logits, weights, names):
        target = downsample_labels(labels, tuple(level_logits.shape[-2:]))
        losses[name] = weight * masked_cross_entropy(level_logits, target, ignore_value)
    return losses
