"""PointRend's class count in d2ext's consistency check (``d2ext.engine.consistency``).

The point head predicts the classes of the head it refines: the detector's
thing classes in Mask R-CNN, the dataset's stuff classes in Semantic FPN. The
other keys of those models (ROI_HEADS / SEM_SEG_HEAD) are the baselines'
checks, run too, as the meta-architecture is detectron2's.
"""
from __future__ import annotations

from typing import List

from d2ext.engine import Expectation, expect_count, register_consistency_check

__all__ = ["point_head_instance_classes", "point_head_semantic_classes"]

_KEY = "MODEL.POINT_HEAD.NUM_CLASSES"


def point_head_instance_classes(cfg, meta) -> List[Expectation]:
    if cfg.MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK:
        return []  # one mask per box: NUM_CLASSES is not used
    return expect_count(_KEY, cfg.MODEL.POINT_HEAD.NUM_CLASSES, meta, "thing_classes")


def point_head_semantic_classes(cfg, meta) -> List[Expectation]:
    return expect_count(_KEY, cfg.MODEL.POINT_HEAD.NUM_CLASSES, meta, "stuff_classes")


for _mask_head in ("PointRendMaskHead", "ImplicitPointRendMaskHead"):
    register_consistency_check("MODEL.ROI_MASK_HEAD.NAME", _mask_head, point_head_instance_classes)
register_consistency_check("MODEL.SEM_SEG_HEAD.NAME", "PointRendSemSegHead", point_head_semantic_classes)
