"""ICNet: real-time semantic segmentation on high-resolution images by an image cascade
(Zhao et al., ECCV 2018).

The deep, expensive ResNet runs on the 1/4 image (to 1/32 of the input, then
pyramid pooling); its first stages also run on the 1/2 image (shared weights,
to 1/16); three light convolutions run on the full image (to 1/8). Cascade
feature fusion units merge the branches from coarse to fine, and cascade label
guidance supervises the 1/16, 1/8 and 1/4 outputs. The official deploy
network's variant (low branch on downsampled medium features, pyramid pooling
by sum) is ``MODEL.ICNET.LOW_BRANCH_INPUT: "feature"`` + ``PPM_MODE: "sum"``.

Why a backbone and a head on detectron2's ``SemanticSegmentor`` rather than a
new meta-architecture: what ``SemanticSegmentor`` does around its two parts is
exactly what ICNet needs — normalize, pad the batch to the backbone's
``size_divisibility`` (32 here, so every branch and every x2 fusion has exact
sizes, odd input sizes included), pad the labels with the ignore value, and
crop and resize the head's full-size logits back to each image's original size.
The image cascade fits the backbone interface (image in, named features out:
``ICNetBackbone``) and fusion + label guidance fit the head interface (features
and labels in, logits or losses out: ``ICNetHead``). So the mapper, evaluators,
demo and benchmark treat ICNet like any ``SemanticSegmentor``, whose targets and
outputs ``d2ext.model_io`` already declares; a new meta-architecture would only
duplicate that code.

Components (registered on import):

- ``ICNetBackbone`` in ``BACKBONE_REGISTRY`` (``MODEL.BACKBONE.NAME``),
- ``ICNetHead`` in ``SEM_SEG_HEADS_REGISTRY`` (``MODEL.SEM_SEG_HEAD.NAME``),
- ``add_icnet_config`` with ``d2ext.config.register_config`` (keys ``MODEL.ICNET.*``).
"""
import d2ext  # noqa: F401  (compat before detectron2)

from d2ext.config import register_config

from .backbone import ICNetBackbone, PyramidPooling, dilate_stage
from .config import add_icnet_config
from .head import CascadeFeatureFusion, ICNetHead
from .loss import cascade_guidance_losses, downsample_labels

register_config("icnet", add_icnet_config)

__all__ = [
    "ICNetBackbone",
    "ICNetHead",
    "CascadeFeatureFusion",
    "PyramidPooling",
    "add_icnet_config",
    "cascade_guidance_losses",
    "dilate_stage",
    "downsample_labels",
]
