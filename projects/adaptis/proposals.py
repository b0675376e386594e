"""Candidate points from the proposal map (inference).

proposal map = sigmoid(logit) ** power, zeroed where the largest thing
probability is below a threshold, box-blurred; candidates are its local maxima
above a threshold, in descending order of value.

Shapes: (h, w) one image at input resolution; points xy in input pixels
(a pixel's centre at +0.5).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["box_blur", "local_maxima", "proposal_map"]


def box_blur(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """(h, w) -> (h, w) mean over a kernel x kernel box, as OpenCV's ``blur``:
    the anchor at kernel // 2 (an even kernel reaches one pixel further up and
    left), borders reflected without repeating the edge (BORDER_REFLECT_101)."""
    if kernel <= 1:
        return x
    lo, hi = kernel // 2, kernel - 1 - kernel // 2
    h, w = x.shape
    mode = "reflect" if min(h, w) > max(lo, hi) else "replicate"
    padded = F.pad(x[None, None], (lo, hi, lo, hi), mode=mode)
    return F.avg_pool2d(padded, kernel, stride=1)[0, 0]


def proposal_map(
    logits: torch.Tensor, thing_prob: torch.Tensor, *, power: float, thing_thresh: float, blur: int
) -> torch.Tensor:
    """
    Args:
        logits: (h, w) proposal logits at input resolution.
        thing_prob: (T, h, w) semantic probabilities of the thing classes.

    Returns:
        (h, w) in [0, 1].
    """
    pmap = torch.sigmoid(logits) ** power
    if thing_prob.shape[0] == 0:
        return torch.zeros_like(pmap)
    pmap = torch.where(thing_prob.max(dim=0).values < thing_thresh, torch.zeros_like(pmap), pmap)
    return box_blur(pmap, blur)


def local_maxima(pmap: torch.Tensor, thresh: float, kernel: int = 3, limit: int = -1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Local maxima of a map, best first.

    A pixel is a candidate when its value is above ``thresh``, is the largest in
    its ``kernel`` x ``kernel`` window, and none of its 8 neighbours is below
    ``thresh`` (the reference rejects isolated peaks the same way). Equal
    values keep raster order.

    Args:
        pmap: (h, w).
        limit: keep at most this many (the first ones); < 0: all.

    Returns:
        points (n, 2) xy at pixel centres, values (n,).
    """
    if kernel % 2 != 1:
        raise ValueError(f"MODEL.ADAPTIS.TEST.LOCAL_MAX_KERNEL must be odd, got {kernel}")
    x = pmap[None, None]
    window_max = F.max_pool2d(x, kernel, stride=1, padding=kernel // 2)[0, 0]
    neighbour_min = -F.max_pool2d(-x, 3, stride=1, padding=1)[0, 0]  # padding is -inf: ignored
    keep = (pmap > thresh) & (pmap >= window_max) & (neighbour_min >= thresh)
    flat = keep.flatten().nonzero()[:, 0]
    values = pmap.flatten()[flat]
    values, order = torch.sort(values, descending=True, stable=True)
    flat = flat[order]
    if limit >= 0:
        flat, values = flat[:limit], values[:limit]
    w = pmap.shape[1]
    points = torch.stack([flat % w, flat // w], dim=1).to(pmap.dtype) + 0.5
    return points, values
