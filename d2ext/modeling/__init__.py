"""Model parts any project's config may name: backbones registered in detectron2's BACKBONE_REGISTRY."""
from . import backbone  # noqa: F401  (registers the backbones)
