"""How close an exported model's outputs are to eager PyTorch's (export --verify, tests)."""
from __future__ import annotations

from typing import Dict

import torch

__all__ = ["compare_semantic", "compare_tensors"]


def compare_semantic(reference: torch.Tensor, exported: torch.Tensor) -> Dict[str, float]:
    """Both (N, K, H, W) sem_seg outputs -> max |difference| and the share of pixels
    whose argmax class agrees."""
    if reference.shape != exported.shape:
        raise ValueError(f"shapes differ: eager {list(reference.shape)}, exported {list(exported.shape)}")
    ref, out = reference.float().cpu(), exported.float().cpu()
    return {
        "max_abs_diff": float((ref - out).abs().max()) if ref.numel() else 0.0,
        "argmax_agreement": float((ref.argmax(1) == out.argmax(1)).float().mean()),
    }


def compare_tensors(reference: Dict[str, torch.Tensor], exported: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """name -> max |difference| of same-named outputs (inf where shapes differ)."""
    out = {}
    for name, ref in reference.items():
        other = exported[name]
        if tuple(ref.shape) != tuple(other.shape):
            out[name] = float("inf")
        elif ref.numel() == 0:
            out[name] = 0.0
        else:
            out[name] = float((ref.float().cpu() - other.float().cpu()).abs().max())
    return out
