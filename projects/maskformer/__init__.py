"""MaskFormer: mask classification for semantic, panoptic and instance segmentation.

Importing this package registers:

- ``MaskFormer`` in detectron2's META_ARCH_REGISTRY and ``MaskFormerHead``,
  ``PerPixelBaselineHead``, ``PerPixelBaselinePlusHead`` (for detectron2's
  SemanticSegmentor) in its SEM_SEG_HEADS_REGISTRY; pixel decoders in ``PIXEL_DECODER_REGISTRY``;
- the config keys (``add_maskformer_config``, with ``d2ext.config.register_config``);
- the model's targets and outputs in ``d2ext.model_io``: targets from
  ``INPUT.DATASET_MAPPER_NAME``, outputs from ``MODEL.MASK_FORMER.TEST.*_ON``,
  large-scale jitter for Mask2Former's ``*_lsj`` mappers;
- the ``maskformer_semantic_segments`` target builder of the common mapper;
- its class count (``MODEL.SEM_SEG_HEAD.NUM_CLASSES``) in d2ext's consistency check.
"""
from __future__ import annotations

from typing import FrozenSet

from d2ext.config import register_config
from d2ext.engine import register_consistency_check
from d2ext.model_io import register_model_io

from . import targets  # noqa: F401  (registers the target builder)
from .augmentations import train_augmentations
from .config import DATASET_MAPPER_TARGETS, add_maskformer_config
from .criterion import SetCriterion
from .head import MaskFormerHead
from .matcher import HungarianMatcher, NonFiniteCostError
from .meta_arch import MaskFormer, class_count_expectations
from .masked_transformer_decoder import MultiScaleMaskedTransformerDecoder
from .msdeform_pixel_decoder import MSDeformAttnPixelDecoder
from .per_pixel_baseline import PerPixelBaselineHead, PerPixelBaselinePlusHead
from .pixel_decoder import PIXEL_DECODER_REGISTRY, BasePixelDecoder, TransformerEncoderPixelDecoder

__all__ = [
    "BasePixelDecoder",
    "HungarianMatcher",
    "MaskFormer",
    "MaskFormerHead",
    "MSDeformAttnPixelDecoder",
    "MultiScaleMaskedTransformerDecoder",
    "NonFiniteCostError",
    "PIXEL_DECODER_REGISTRY",
    "PerPixelBaselineHead",
    "PerPixelBaselinePlusHead",
    "SetCriterion",
    "TransformerEncoderPixelDecoder",
    "add_maskformer_config",
]


def _targets(cfg) -> FrozenSet[str]:
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPER_TARGETS:
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME={name!r}: MaskFormer knows {sorted(DATASET_MAPPER_TARGETS)}"
        )
    return DATASET_MAPPER_TARGETS[name]


def _outputs(cfg) -> FrozenSet[str]:
    test = cfg.MODEL.MASK_FORMER.TEST
    on = {"sem_seg": test.SEMANTIC_ON, "panoptic_seg": test.PANOPTIC_ON, "instances": test.INSTANCE_ON}
    return frozenset(k for k, v in on.items() if v)


register_config("maskformer", add_maskformer_config)
register_model_io("MaskFormer", targets=_targets, outputs=_outputs, train_augmentations=train_augmentations)
register_consistency_check("MODEL.META_ARCHITECTURE", "MaskFormer", class_count_expectations)
