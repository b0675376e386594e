"""Point operations shared by PointRend and MaskFormer.

Shape legend:
    N   batch (images, boxes or queries)
    C   channels (classes for logits)
    H,W height, width of a dense map
    P   number of points

Coordinates are (x, y) pairs in [0, 1] x [0, 1] relative to the whole map,
with ``align_corners=False`` semantics: the centre of cell (i, j) of an H x W
map is ((j + 0.5) / W, (i + 0.5) / H), and sampling there returns exactly the
value stored in that cell.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "point_sample",
    "binary_uncertainty",
    "margin_uncertainty",
    "uncertain_points_with_randomness",
    "uncertain_grid_points",
]


def point_sample(features: torch.Tensor, coords: torch.Tensor, **kwargs) -> torch.Tensor:
    """Bilinear sampling of a dense map at continuous points.

    Args:
        features: (N, C, H, W).
        coords: (N, P, 2) in [0, 1], (x, y) order; or (N, Hg, Wg, 2) for a grid.
        kwargs: passed to ``F.grid_sample`` (``align_corners`` defaults to False,
            ``padding_mode`` to "zeros", ``mode`` to "bilinear").

    Returns:
        (N, C, P) for (N, P, 2) coords; (N, C, Hg, Wg) for grid coords.
    """
    kwargs.setdefault("align_corners", False)
    is_list = coords.dim() == 3
    grid = coords.unsqueeze(2) if is_list else coords
    # grid_sample requires the same dtype for input and grid.
    out = F.grid_sample(features, 2.0 * grid.to(features.dtype) - 1.0, **kwargs)
    return out.squeeze(3) if is_list else out


def binary_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary (foreground) logits: -|logit|, highest at the boundary.

    Args:
        logits: (N, 1, ...) logits of one class.
    Returns:
        Same shape as ``logits``.
    """
    return -logits.abs()


def margin_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of multi-class logits: -(top1 - top2), highest where two classes tie.

    Args:
        logits: (N, C, ...) with C >= 2.
    Returns:
        (N, 1, ...).
    """
    if logits.shape[1] < 2:
        raise ValueError(f"margin_uncertainty needs >= 2 classes, got C={logits.shape[1]}")
    top2 = logits.topk(2, dim=1).values
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def uncertain_points_with_randomness(
    coarse_logits: torch.Tensor,
    uncertainty_func: Callable[[torch.Tensor], torch.Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> torch.Tensor:
    """Training-time point selection (PointRend, Sec. 3.1).

    Draws ``k * num_points`` uniform points, evaluates the uncertainty of the
    logits *interpolated at those points*, keeps the ``beta * num_points`` most
    uncertain ones and adds ``(1 - beta) * num_points`` fresh uniform points.

    Args:
        coarse_logits: (N, C, H, W) logits (C = 1 for class-specific masks whose
            class was already selected).
        uncertainty_func: maps sampled logits (N, C, P) to (N, 1, P) or (N, P),
            higher = more uncertain (e.g. ``binary_uncertainty``).
        num_points: P, points returned per map.
        oversample_ratio: k >= 1.
        importance_sample_ratio: beta in [0, 1].

    Returns:
        (N, P, 2) coordinates in [0, 1], (x, y) order; the uncertain points first.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    n = coarse_logits.shape[0]
    device, dtype = coarse_logits.device, coarse_logits.dtype
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain

    coords = torch.rand(n, num_sampled, 2, device=device, dtype=dtype)
    uncertainty = uncertainty_func(point_sample(coarse_logits, coords)).reshape(n, num_sampled)
    idx = uncertainty.topk(num_uncertain, dim=1).indices  # (N, num_uncertain)
    coords = coords.gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        coords = torch.cat([coords, torch.rand(n, num_random, 2, device=device, dtype=dtype)], 1)
    return coords


def uncertain_grid_points(
    uncertainty_map: torch.Tensor, num_points: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inference-time point selection: the most uncertain cells of a regular grid.

    Args:
        uncertainty_map: (N, 1, H, W), higher = more uncertain.
        num_points: cells to select per map; clipped to H * W.

    Returns:
        indices: (N, P) long, flat indices into H * W (row-major), most
            uncertain first.
        coords: (N, P, 2) in [0, 1], (x, y) of the selected cell centres.
    """
    n, _, h, w = uncertainty_map.shape
    num_points = min(h * w, num_points)
    indices = uncertainty_map.reshape(n, h * w).topk(num_points, dim=1).indices
    dtype = uncertainty_map.dtype if uncertainty_map.is_floating_point() else torch.float32
    x = (indices % w).to(dtype).add_(0.5).div_(w)
    y = torch.div(indices, w, rounding_mode="floor").to(dtype).add_(0.5).div_(h)
    return indices, torch.stack([x, y], dim=2)
