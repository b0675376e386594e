"""R2O's two schedules over training: the cluster count K and the target
network's EMA momentum. Both are pure functions of the iteration, so a resumed
run continues them exactly.
"""
from __future__ import annotations

import math

__all__ = ["k_schedule", "momentum_schedule"]


def k_schedule(iteration: int, max_iter: int, k_start: int, k_end: int, period: int) -> int:
    """The cluster count K of an iteration: a cosine curriculum from k_start to k_end.

    The reference (KKallidromitis/r2o, ``CosineScheduler``) goes from K_START
    to K_END along a quarter cosine over its epochs,
    K(p) = k_end + (k_start - k_end) * cos(pi / 2 * p), p in [0, 1], so K
    falls slowly first and fast near the end; it changes K once per epoch and
    truncates it to an integer. Here K changes once per ``period`` iterations
    (MODEL.R2O.KMEANS.K_UPDATE_PERIOD; one epoch's iterations reproduce the
    reference), p is the period's index over the last period's index (the
    first period has k_start, the last k_end exactly), and K is rounded to the
    nearest integer rather than truncated. Iterations at or past max_iter
    keep k_end.

    Args:
        iteration: the 0-based training iteration (detectron2's ``trainer.iter``).
        max_iter: SOLVER.MAX_ITER.
        k_start, k_end: MODEL.R2O.KMEANS.K_START >= K_END >= 1.
        period: MODEL.R2O.KMEANS.K_UPDATE_PERIOD >= 1.
    """
    if k_end < 1:
        raise ValueError(f"MODEL.R2O.KMEANS.K_END must be >= 1, got {k_end}")
    if k_start < k_end:
        raise ValueError(
            f"MODEL.R2O.KMEANS.K_START ({k_start}) must be >= MODEL.R2O.KMEANS.K_END ({k_end}): K only falls"
        )
    if period < 1:
        raise ValueError(f"MODEL.R2O.KMEANS.K_UPDATE_PERIOD must be >= 1, got {period}")
    if max_iter < 1:
        raise ValueError(f"SOLVER.MAX_ITER must be >= 1 for the K schedule, got {max_iter}")
    if iteration < 0:
        raise ValueError(f"k_schedule: the iteration must be >= 0, got {iteration}")
    if iteration >= max_iter:
        return k_end
    last_period = (max_iter - 1) // period
    if last_period == 0:  # the whole run is one period
        return k_start
    progress = (iteration // period) / last_period
    return int(round(k_end + (k_start - k_end) * math.cos(0.5 * math.pi * progress)))


def momentum_schedule(iteration: int, max_iter: int, base_momentum: float) -> float:
    """The EMA momentum of the target network after ``iteration`` steps:
    1 - (1 - m0) * (cos(pi * k / K) + 1) / 2, k = iteration, K = max_iter
    (BYOL's and the reference's schedule: m0 at the start, 1 at the end).

    Args:
        iteration: steps taken so far, clipped to [0, max_iter].
        max_iter: SOLVER.MAX_ITER.
        base_momentum: MODEL.R2O.BASE_MOMENTUM, m0 in [0, 1).
    """
    if not 0.0 <= base_momentum < 1.0:
        raise ValueError(f"MODEL.R2O.BASE_MOMENTUM must be in [0, 1), got {base_momentum}")
    if max_iter < 1:
        raise ValueError(f"SOLVER.MAX_ITER must be >= 1 for the momentum schedule, got {max_iter}")
    k = min(max(iteration, 0), max_iter)
    return 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * k / max_iter) + 1.0) / 2.0
