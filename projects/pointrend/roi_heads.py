"""PointRendROIHeads: StandardROIHeads that hands the point-based mask heads the image
features (no ROI pooler), whatever ROI_MASK_HEAD.POOLER_TYPE says.

Also reads the published configs' older form, ``ROI_MASK_HEAD.NAME: CoarseMaskHead``
with ``POINT_HEAD_ON: True``, as PointRendMaskHead (without editing the config).
"""
from __future__ import annotations

import logging

from detectron2.modeling import ROI_HEADS_REGISTRY, ROI_MASK_HEAD_REGISTRY, StandardROIHeads

__all__ = ["PointRendROIHeads", "POINT_BASED_MASK_HEADS"]

logger = logging.getLogger(__name__)

POINT_BASED_MASK_HEADS = ("PointRendMaskHead", "ImplicitPointRendMaskHead")


@ROI_HEADS_REGISTRY.register()
class PointRendROIHeads(StandardROIHeads):
    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        if not cfg.MODEL.MASK_ON:
            return {}
        name = cfg.MODEL.ROI_MASK_HEAD.NAME
        if name == "CoarseMaskHead" and cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON:
            logger.info("ROI_MASK_HEAD.NAME CoarseMaskHead + POINT_HEAD_ON: using PointRendMaskHead")
            name = "PointRendMaskHead"
        if name not in POINT_BASED_MASK_HEADS:
            return super()._init_mask_head(cfg, input_shape)
        in_features = list(cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES)
        in_features += [f for f in cfg.MODEL.POINT_HEAD.IN_FEATURES if f not in in_features]
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.ROI_MASK_HEAD.IN_FEATURES / MODEL.POINT_HEAD.IN_FEATURES name {missing}, "
                f"which the backbone does not output (it has {sorted(input_shape)})."
            )
        shape = {f: input_shape[f] for f in in_features}
        return {
            "mask_in_features": in_features,
            "mask_pooler": None,
            "mask_head": ROI_MASK_HEAD_REGISTRY.get(name)(cfg, shape),
        }
