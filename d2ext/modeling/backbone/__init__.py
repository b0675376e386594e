"""Backbones of the public implementations that detectron2's pip package lacks.

Each module registers its ``build_*_backbone`` in detectron2's BACKBONE_REGISTRY
under the official name, with the official parameter names, so the official
configs build and their published checkpoints load through ``MODEL.WEIGHTS``.
"""
from . import deeplab_resnet  # noqa: F401
from . import swin  # noqa: F401
