"""The training target of the official ``mask_former_semantic`` mapper, as a
d2ext target builder: one segment per class of the semantic map.

The common ``"segments"`` target already does this for semantic-only data, but
prefers the panoptic annotation when a dict has both; this one always uses
the semantic map (read from ``sem_seg_file_name``, or derived from the
panoptic PNG by the common mapper), as the official semantic mapper does. It
writes the same field, ``"segments"``: ``Instances`` with ``gt_classes`` (K,)
int64 and ``gt_masks`` (K, H, W) bool, classes in ascending order, the ignore
label excluded; K = 0 when every pixel is ignored.
"""
from __future__ import annotations

from d2ext.data.targets import TargetContext, register_target, semantic_segments

SEMANTIC_SEGMENTS = "maskformer_semantic_segments"


@register_target(SEMANTIC_SEGMENTS, maps=("sem_seg",))
def build_semantic_segments(ctx: TargetContext, out: dict) -> None:
    out["segments"] = semantic_segments(ctx)
