"""Projector and predictor of R2O (and BYOL): Linear -> BN -> ReLU -> Linear.

Shapes: N vectors (one per mask and view), C input channels, D output channels.
"""
from __future__ import annotations

import torch
from detectron2.layers import NaiveSyncBatchNorm
from torch import nn

__all__ = ["MLPHead", "build_mlp_norm"]

_NORMS = ("BN", "naiveSyncBN")


class _NaiveSyncBatchNorm1d(NaiveSyncBatchNorm):
    """detectron2's NaiveSyncBatchNorm on (N, C) vectors. stats_mode "N" weights
    each process by its number of vectors: ranks see different mask counts."""

    def __init__(self, num_features: int):
        super().__init__(num_features, stats_mode="N")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[:, :, None, None])[:, :, 0, 0]


def build_mlp_norm(norm: str, channels: int) -> nn.Module:
    """"BN": per-process batch statistics; "naiveSyncBN": averaged over all
    processes (the reference converts every BN to a synchronised one); the same in one process."""
    if norm == "BN":
        return nn.BatchNorm1d(channels)
    if norm == "naiveSyncBN":
        return _NaiveSyncBatchNorm1d(channels)
    raise ValueError(f"MODEL.R2O.HEAD_NORM={norm!r}: expected one of {_NORMS}")


class MLPHead(nn.Module):
    """(N, in_dim) -> Linear(in_dim, hidden_dim) -> norm -> ReLU -> Linear(hidden_dim, out_dim) -> (N, out_dim).

    BYOL's projector / predictor. The batch-norm statistics are those of the N
    vectors given in one call (every mask of both views of the batch).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, norm: str = "BN"):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, hidden_dim)
        self.norm = build_mlp_norm(norm, hidden_dim)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.relu(self.norm(self.linear1(x))))
