"""``sem_seg_postprocess`` without the resize when there is nothing to resize.

detectron2's ``sem_seg_postprocess`` crops the padding off a (C, H, W) prediction
and then always calls bilinear ``F.interpolate`` to the requested output size,
even when the crop already has that size. Bilinear interpolation to the same
size (``align_corners=False``) maps every pixel onto itself, so that call only
copies the tensor, yet on a CPU it costs as much as a real resize: 116 ms
at 19 x 1024 x 2048 on one core of the 2-core development machine, against
110 ms for the x4 upsampling of the logits before it (command in
projects/icnet/README.md), a fixed cost that every semantic model
(Semantic FPN, Panoptic FPN, ICNet, MaskFormer) pays at full-resolution
inference. This version returns the crop itself when the sizes match, and is
otherwise detectron2's function.

:func:`install` puts it in place of detectron2's in the modules that call it
(``SemanticSegmentor``, ``PanopticFPN``), so that baselines and projects get
the same post-processing. It is not applied on ``import d2ext``: d2ext calls
it where it builds models (``d2ext.engine.Trainer.build_model``, which
``train_net.py``, the predictor, the demo and the benchmarks use), so a
detectron2 model built by the user's own code is untouched. It is the one
patch of detectron2 behaviour outside ``d2ext.compat``; outputs are unchanged
(tested against detectron2's function), only the wasted copy is gone.
"""
from __future__ import annotations

import importlib
from typing import Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling import postprocessing as _detectron2_postprocessing

# detectron2's own function, kept for comparison (tests) before install() replaces it.
detectron2_sem_seg_postprocess = _detectron2_postprocessing.sem_seg_postprocess

# The detectron2 modules that imported ``sem_seg_postprocess`` by name.
_CALLERS = (
    "detectron2.modeling.postprocessing",
    "detectron2.modeling.meta_arch.semantic_seg",
    "detectron2.modeling.meta_arch.panoptic_fpn",
)


def sem_seg_postprocess(
    result: torch.Tensor, img_size: Sequence[int], output_height: int, output_width: int
) -> torch.Tensor:
    """Crop a prediction to its image and resize it to the output size.

    Args:
        result: (C, H, W) logits or probabilities of a padded batch entry.
        img_size: (h, w) of the image inside the padding (h <= H, w <= W).
        output_height, output_width: the size the caller wants.

    Returns:
        (C, output_height, output_width); a view of ``result`` when
        (h, w) == (output_height, output_width), else a new bilinear-resized tensor.
    """
    cropped = result[:, : img_size[0], : img_size[1]]
    if tuple(cropped.shape[-2:]) == (output_height, output_width):
        return cropped
    return F.interpolate(
        cropped[None], size=(output_height, output_width), mode="bilinear", align_corners=False
    )[0]


def install() -> None:
    """Replace detectron2's ``sem_seg_postprocess`` in the modules that use it (idempotent).

    Process-wide: once d2ext has built a model, every SemanticSegmentor and
    PanopticFPN in the process, baseline or not, post-processes the same way.
    """
    for name in _CALLERS:
        module = importlib.import_module(name)
        module.sem_seg_postprocess = sem_seg_postprocess
