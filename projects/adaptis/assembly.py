"""Greedy assembly: candidate points -> non-overlapping instances.

In candidate order: skip a candidate already covered by an accepted mask;
predict its mask (p > mask_thresh); reject it if smaller than ``min_area`` or
if at least ``overlap_thresh`` of it is already covered; otherwise accept it
and mark its pixels covered.

A candidate's mask does not depend on the loop (only on the image and the
point); only the decisions do. So masks are predicted for chunks of the
candidates that are uncovered when the chunk is formed, in one forward each,
and the decisions are then applied one candidate at a time, in order. A
candidate of the chunk that an earlier one of the same chunk covers is
skipped as the sequential loop would skip it (its mask was predicted for
nothing), and a candidate left out of a chunk was covered already and stays
covered, since coverage only grows. The result is therefore identical to the
one-at-a-time loop (``chunk_size=1``), with about ``n / chunk_size`` forwards
instead of up to ``n``.

Shapes: n candidates, (h, w) the image at input resolution, points xy in
input pixels.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple

import torch

__all__ = ["AssemblyResult", "greedy_assembly"]

# (m, 2) points -> (m, h, w) mask probabilities
MaskPredictor = Callable[[torch.Tensor], torch.Tensor]


class AssemblyResult(NamedTuple):
    accepted: List[int]  # indices into the candidates, in acceptance order
    probs: torch.Tensor  # (A, h, w) probabilities of the accepted masks
    num_forwards: int  # calls of the mask predictor
    num_predicted: int  # masks predicted (accepted, rejected, or wasted in a chunk)


def _pixel(points: torch.Tensor, hw) -> torch.Tensor:
    """(n, 2) xy -> (n,) flat index of the pixel each point falls in (clamped into the image)."""
    h, w = hw
    x = points[:, 0].floor().long().clamp(0, w - 1)
    y = points[:, 1].floor().long().clamp(0, h - 1)
    return y * w + x


def greedy_assembly(
    points: torch.Tensor,
    predict: MaskPredictor,
    image_hw: tuple,
    *,
    mask_thresh: float,
    overlap_thresh: float,
    min_area: int,
    chunk_size: int = 16,
) -> AssemblyResult:
    """
    Args:
        points: (n, 2) candidates, in the order they are examined.
        predict: (m, 2) points -> (m, h, w) probabilities; called once per chunk.
        image_hw: (h, w).
        mask_thresh, overlap_thresh, min_area: the decision rule above.
        chunk_size: candidates per forward (1: the one-at-a-time loop).

    Returns:
        :class:`AssemblyResult`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    h, w = image_hw
    covered = torch.zeros(h * w, dtype=torch.bool, device=points.device)
    pixel = _pixel(points, image_hw)
    accepted: List[int] = []
    kept: List[torch.Tensor] = []
    forwards = predicted = 0
    start, n = 0, points.shape[0]
    while start < n:
        # The next chunk: the first chunk_size candidates from `start` that are
        # not covered now (one vectorised look-up, no loop over candidates).
        free = (~covered[pixel[start:]]).nonzero()[:, 0] + start
        if free.numel() == 0:
            break
        chunk = free[:chunk_size]
        start = int(chunk[-1]) + 1
        probs = predict(points[chunk])  # (m, h, w)
        forwards += 1
        predicted += chunk.numel()
        masks = (probs > mask_thresh).flatten(1)  # (m, h * w)
        areas = masks.sum(dim=1)
        for j, index in enumerate(chunk.tolist()):  # the decisions, in order
            if covered[pixel[index]]:
                continue  # covered by an earlier candidate of this chunk
            area = int(areas[j])
            if area < min_area or area == 0:
                continue
            overlap = int((masks[j] & covered).sum())
            if overlap / area >= overlap_thresh:
                continue
            covered |= masks[j]
            accepted.append(index)
            kept.append(probs[j])
    out = torch.stack(kept) if kept else points.new_zeros((0, h, w))
    return AssemblyResult(accepted, out, forwards, predicted)
