"""Test-time augmentation for semantic inference: several scales, each also flipped.

Driven by detectron2's ``TEST.AUG.*`` keys (``ENABLED``, ``MIN_SIZES``,
``MAX_SIZE``, ``FLIP``). The image the test mapper gives (already resized to
``MIN_SIZE_TEST``) is resized again, bilinearly, so that its shorter side is
each of ``MIN_SIZES`` relative to the original image (longer side capped at
``MAX_SIZE``), as detectron2's ``ResizeShortestEdge`` computes it. Every
variant's class scores are resized to the original image size, unflipped and
averaged.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from detectron2.data.transforms import ResizeShortestEdge

__all__ = ["semantic_tta"]

# images (n, 3, h, w) float, output (H, W) -> class scores (n, K, H, W)
PredictFn = Callable[[torch.Tensor, tuple], torch.Tensor]


def semantic_tta(
    predict: PredictFn,
    image: torch.Tensor,
    height: int,
    width: int,
    *,
    min_sizes: Sequence[int],
    max_size: int,
    flip: bool,
) -> torch.Tensor:
    """
    Args:
        predict: runs the model on a batch of same-size images, returning
            semantic scores at the given output size.
        image: (3, h, w) the test mapper's image; (height, width): original size.

    Returns:
        (K, height, width) mean class scores over all variants.
    """
    total, count = None, 0
    image = image.float()[None]
    for size in min_sizes:
        h, w = ResizeShortestEdge.get_output_shape(height, width, size, max_size)
        scaled = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        batch = torch.cat([scaled, scaled.flip(-1)]) if flip else scaled
        scores = predict(batch, (height, width))
        if flip:
            scores = torch.stack([scores[0], scores[1].flip(-1)])
        total = scores.sum(0) if total is None else total + scores.sum(0)
        count += scores.shape[0]
    return total / count
