"""Fold inference-mode batch norms into the convolutions before them (a deployment step).

In eval mode a batch norm is a per-channel affine map, y = (x - mean) / sqrt(var + eps)
* gamma + beta, so after a convolution it can be merged into the convolution's
weights and bias: one pass over the feature map instead of two. On a CPU the
saving is largest where feature maps are large and convolutions cheap (the
memory-bound high-resolution layers of real-time networks). ``tools/benchmark.py
--fold-bn`` applies it to every model it times, so that comparisons stay fair.

Folded: detectron2 ``Conv2d`` modules whose ``norm`` is a ``BatchNorm2d`` (also
``SyncBatchNorm`` / ``NaiveSyncBatchNorm``, in eval mode) or a ``FrozenBatchNorm2d``.
Left alone: other norms (GroupNorm has per-image statistics, LayerNorm ...) and
batch norms that are not a detectron2 ``Conv2d``'s ``norm``.
"""
from __future__ import annotations

from typing import Tuple

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn


def _affine_of(norm: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with norm(x) == x * scale + shift per channel, each shaped (C,)."""
    if norm.running_mean is None:
        raise ValueError(f"{type(norm).__name__} without running statistics cannot be folded")
    scale = (norm.running_var + norm.eps).rsqrt()
    shift = -norm.running_mean * scale
    if isinstance(norm, FrozenBatchNorm2d) or norm.affine:  # FrozenBatchNorm2d is always affine
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    return scale, shift


def fold_batch_norms(model: nn.Module) -> int:
    """Merge each eval-mode batch norm of a detectron2 ``Conv2d`` into its weights, in place.

    Outputs are unchanged up to float rounding. The model must be in eval mode
    (a batch norm in training mode normalizes by batch statistics, which no
    fixed weights can reproduce).

    Returns:
        the number of batch norms folded.
    """
    folded = 0
    for name, module in model.named_modules():
        if not isinstance(module, Conv2d):
            continue
        norm = module.norm
        if not isinstance(norm, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
            continue
        if norm.training and not isinstance(norm, FrozenBatchNorm2d):
            raise ValueError(
                f"{name}.norm is in training mode: call model.eval() before fold_batch_norms"
            )
        with torch.no_grad():
            scale, shift = _affine_of(norm)
            weight = module.weight * scale.reshape(-1, 1, 1, 1)
            bias = shift if module.bias is None else module.bias * scale + shift
        module.weight = nn.Parameter(weight, requires_grad=False)
        module.bias = nn.Parameter(bias, requires_grad=False)
        module.norm = None
        folded += 1
    return folded
