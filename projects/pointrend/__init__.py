"""PointRend: image segmentation as rendering (Kirillov et al., CVPR 2020), and
Implicit PointRend (Cheng et al., CVPR 2022), for Mask R-CNN and Semantic FPN.

Labels are computed only at a few adaptively chosen points, the uncertain ones
near boundaries, by a small point head on fine-grained features (p2) plus a
coarse prediction. Components (registered on import), with detectron2's
PointRend names and config keys so that its published configs build unchanged:

- ``PointRendMaskHead``, ``ImplicitPointRendMaskHead``, ``CoarseMaskHead`` in
  ``ROI_MASK_HEAD_REGISTRY`` (``MODEL.ROI_MASK_HEAD.NAME``);
- ``PointRendROIHeads`` in ``ROI_HEADS_REGISTRY``;
- ``PointRendSemSegHead`` in ``SEM_SEG_HEADS_REGISTRY`` (``MODEL.SEM_SEG_HEAD.NAME``);
- ``StandardPointHead``, ``ImplicitPointHead`` in ``POINT_HEAD_REGISTRY``
  (``MODEL.POINT_HEAD.NAME``);
- ``add_pointrend_config`` with ``d2ext.config.register_config``;
- ``MODEL.POINT_HEAD.NUM_CLASSES`` in d2ext's consistency check (``consistency``).

They plug into detectron2's GeneralizedRCNN and SemanticSegmentor, whose
inputs and outputs ``d2ext.model_io`` already declares.

Ground-truth masks: the point labels are sampled from ``BitMasks``
(``INPUT.MASK_FORMAT: bitmask``, as in every config here and the published
ones). ``PolygonMasks`` are converted, by rasterizing each polygon inside its
box (224 x 224) at every training step: correct, but slower.
"""
import d2ext  # noqa: F401  (compat before detectron2)

from .coarse_mask_head import CoarseMaskHead
from .config import add_pointrend_config
from .mask_head import ImplicitPointRendMaskHead, PointRendMaskHead
from .point_head import POINT_HEAD_REGISTRY, ImplicitPointHead, StandardPointHead, build_point_head
from .roi_heads import PointRendROIHeads
from .semantic_seg import PointRendSemSegHead
from . import consistency  # noqa: F401  (registers the point head's class check)

from d2ext.config import register_config  # noqa: E402

register_config("pointrend", add_pointrend_config)

__all__ = [
    "add_pointrend_config",
    "CoarseMaskHead",
    "PointRendMaskHead",
    "ImplicitPointRendMaskHead",
    "PointRendROIHeads",
    "PointRendSemSegHead",
    "POINT_HEAD_REGISTRY",
    "StandardPointHead",
    "ImplicitPointHead",
    "build_point_head",
]
