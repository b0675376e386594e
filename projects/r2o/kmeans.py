"""K-means of R2O's region embeddings, on the embeddings' device.

Shapes: N points of dimension D, k clusters.

The distance is the squared Euclidean one, the objective the sum of squared
distances of the points to their centroids (the inertia). R2O clusters
L2-normalised embeddings, where it ranks pairs exactly as the cosine distance
does (|a - b|^2 = 2 - 2 cos(a, b)); the centroids are plain means, not
re-normalised.

What differs from the reference (whose K-means leaves an empty cluster with a
NaN centroid): empty clusters are re-seeded, so every returned centroid is a
finite mean or a data point, and k is capped at the number of distinct points
(found free of charge by the k-means++ seeding, which runs out of points with
a positive distance exactly when every distinct point is a centroid).
"""
from __future__ import annotations

from typing import Tuple

import math

import torch

__all__ = ["kmeans", "inertia"]


def _squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, D), (k, D) -> (N, k) squared Euclidean distances, clamped at 0.

    The expanded square |x|^2 - 2 x.c + |c|^2 costs one matmul; rounding can
    make it slightly negative for coincident points, hence the clamp.
    """
    d2 = (x * x).sum(1, keepdim=True) - 2.0 * (x @ centroids.t()) + (centroids * centroids).sum(1)[None, :]
    return d2.clamp_(min=0.0)


def inertia(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> float:
    """Sum over points of the squared distance to their centroid (exact differences)."""
    return float((x - centroids[labels]).pow(2).sum())


def _num_trials(k: int) -> int:
    """Candidates per greedy k-means++ step: 2 + ln k, scikit-learn's choice."""
    return 2 + int(math.log(k)) if k > 1 else 1


def _kmeans_pp(x: torch.Tensor, k: int, uniforms: torch.Tensor) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; scikit-learn's variant):
    each step draws a few candidate points with probability proportional to
    their squared distance to the nearest centroid chosen so far and keeps the
    one that lowers the total of those distances most.

    Args:
        x: (N, D); k <= N; uniforms: (1 + (k - 1) * T,) float64 in [0, 1),
            T = _num_trials(k), the only randomness.

    Returns:
        (k', D) centroids, k' <= k: the seeding stops short when every point
        coincides with a chosen centroid (k larger than the distinct points).
    """
    n = x.shape[0]
    trials = _num_trials(k)
    index = torch.empty(k, dtype=torch.long, device=x.device)
    index[0] = (uniforms[0] * n).long().clamp_(max=n - 1)
    # Distances to a chosen centroid by exact differences (not the expanded
    # square), so that duplicates of a chosen point weigh exactly 0.
    nearest = (x - x[index[0]]).pow(2).sum(1)
    positive = torch.ones(k, dtype=torch.bool, device=x.device)
    squared_norms = (x * x).sum(1)
    for j in range(1, k):
        cumulative = torch.cumsum(nearest.double(), 0)
        total = cumulative[-1]
        # A uniform in [0, total) falls into the bin of the sampled point;
        # points of weight 0 have empty bins and are never drawn unless
        # total is 0, which `positive` records.
        u = uniforms[1 + (j - 1) * trials : 1 + j * trials]
        candidates = torch.searchsorted(cumulative, u * total, right=True).clamp_(max=n - 1)  # (T,)
        # The candidates' potentials by the expanded square (one matmul);
        # only the kept candidate's distances are then recomputed exactly.
        to_candidates = (
            squared_norms[None, :] - 2.0 * (x[candidates] @ x.t()) + squared_norms[candidates, None]
        ).clamp_(min=0.0)  # (T, N)
        best = torch.minimum(nearest[None, :], to_candidates).sum(1).argmin()
        index[j] = candidates[best]
        positive[j] = total > 0
        nearest = torch.minimum(nearest, (x - x[index[j]]).pow(2).sum(1))
    # Once the total weight is 0 it stays 0: the valid centroids are a prefix.
    return x[index[: int(positive.sum())]]


def _assign(x: torch.Tensor, centroids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N,) index of the nearest centroid and (N,) squared distance to it."""
    d2, labels = _squared_distances(x, centroids).min(1)
    return labels, d2


def _update(x: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    """Centroids as the means of their points; an empty cluster takes one of
    the points farthest from their own centroid (the i-th empty cluster the
    i-th farthest point), which is deterministic and never NaN."""
    k = centroids.shape[0]
    # Sums by a one-hot matmul rather than index_add_: same cost at these
    # sizes, and deterministic on CUDA (no float atomics), so a seeded call
    # reproduces its clusters bit for bit.
    one_hot = torch.nn.functional.one_hot(labels, k).to(x.dtype)  # (N, k)
    counts = one_hot.sum(0)  # (k,)
    means = (one_hot.t() @ x) / counts.clamp(min=1.0)[:, None]
    empty = counts == 0
    farthest = torch.topk(d2, k=min(k, d2.shape[0])).indices  # (<= k,) farthest first
    rank = (torch.cumsum(empty.long(), 0) - 1).clamp_(min=0, max=farthest.shape[0] - 1)
    return torch.where(empty[:, None], x[farthest[rank]], means)


@torch.no_grad()
def kmeans(
    x: torch.Tensor, k: int, num_iters: int, generator: torch.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's K-means with k-means++ seeding, vectorised over points and clusters.

    Args:
        x: (N, D) float points (N >= 1), on any device; computed in float32
            (float64 stays float64).
        k: the number of clusters asked for (>= 1). Capped at N and at the
            number of distinct points of x.
        num_iters: Lloyd iterations after seeding (0: the seeding's clusters);
            the loop stops early once no label changes.
        generator: the only source of randomness (uniform draws on the
            generator's device): the same generator state gives the same
            labels. A CPU generator may drive CUDA data.

    Returns:
        labels: (N,) int64 in [0, k'), each point's nearest centroid.
        centroids: (k', D) in x's dtype, k' = min(k, N, distinct points of x);
            every centroid is finite (empty clusters are re-seeded).
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans: expected (N, D) points with N >= 1, got shape {tuple(x.shape)}")
    if k < 1:
        raise ValueError(f"kmeans: k must be >= 1 (MODEL.R2O.KMEANS.K_START / K_END), got {k}")
    if num_iters < 0:
        raise ValueError(f"kmeans: MODEL.R2O.KMEANS.NUM_ITERS must be >= 0, got {num_iters}")
    if not torch.isfinite(x).all():
        raise ValueError("kmeans: the points contain NaN or Inf")
    points = x if x.dtype == torch.float64 else x.float()
    k = min(k, points.shape[0])
    draws = 1 + (k - 1) * _num_trials(k)
    uniforms = torch.rand(draws, generator=generator, device=generator.device).double().to(points.device)
    centroids = _kmeans_pp(points, k, uniforms)
    labels, d2 = _assign(points, centroids)
    for _ in range(num_iters):
        centroids = _update(points, labels, centroids, d2)
        new_labels, d2 = _assign(points, centroids)
        converged = bool((new_labels == labels).all())
        labels = new_labels
        if converged:
            break
    return labels, centroids.to(x.dtype)
