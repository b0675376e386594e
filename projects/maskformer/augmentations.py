"""Large-scale jitter, the training augmentation of Mask2Former's COCO mappers
(``coco_instance_lsj``, ``coco_panoptic_lsj``), from ``INPUT.IMAGE_SIZE``,
``INPUT.MIN_SCALE``, ``INPUT.MAX_SCALE`` and ``INPUT.RANDOM_FLIP``::

    [flip] -> scale the image to fit s x (IMAGE_SIZE, IMAGE_SIZE), s uniform in
    [MIN_SCALE, MAX_SCALE] -> random IMAGE_SIZE x IMAGE_SIZE crop where larger

One difference from the official mappers, on purpose: an image left smaller
than IMAGE_SIZE is not padded to it here (the official pads the image with 128
and, through detectron2 0.6's FixedSizeCrop, a semantic map with 0, a real
class). The batch pads it instead, as every d2ext model's batch: labels there
are ignored / void / outside every mask, as in the official's padded area.
"""
from __future__ import annotations

from typing import List, Optional

from detectron2.data import transforms as T

from .config import LSJ_MAPPERS

__all__ = ["large_scale_jitter", "train_augmentations"]


def large_scale_jitter(image_size: int, min_scale: float, max_scale: float, flip: str) -> List[T.Augmentation]:
    """Module docstring; ``flip`` in {"horizontal", "vertical", "none"}."""
    augs: List[T.Augmentation] = []
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    augs.append(T.ResizeScale(min_scale, max_scale, image_size, image_size))
    augs.append(T.FixedSizeCrop((image_size, image_size), pad=False))
    return augs


def train_augmentations(cfg) -> Optional[List[T.Augmentation]]:
    """MaskFormer's training augmentations for d2ext.model_io: large-scale jitter
    for the LSJ mapper names, otherwise None (the common mapper's, from INPUT.*)."""
    if cfg.INPUT.DATASET_MAPPER_NAME not in LSJ_MAPPERS:
        return None
    inp = cfg.INPUT
    if not 0 < inp.MIN_SCALE <= inp.MAX_SCALE:
        raise ValueError(
            f"INPUT.MIN_SCALE={inp.MIN_SCALE}, INPUT.MAX_SCALE={inp.MAX_SCALE}: large-scale jitter "
            f"({inp.DATASET_MAPPER_NAME!r}) needs 0 < MIN_SCALE <= MAX_SCALE"
        )
    if inp.IMAGE_SIZE <= 0:
        raise ValueError(f"INPUT.IMAGE_SIZE={inp.IMAGE_SIZE}: large-scale jitter needs a positive size")
    if inp.RANDOM_FLIP not in ("horizontal", "vertical", "none"):
        raise ValueError(f"INPUT.RANDOM_FLIP={inp.RANDOM_FLIP!r}: expected horizontal, vertical or none")
    return large_scale_jitter(inp.IMAGE_SIZE, inp.MIN_SCALE, inp.MAX_SCALE, inp.RANDOM_FLIP)
