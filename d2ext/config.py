"""The one way to get a config: detectron2's defaults + d2ext's keys + every registered project's keys.

Projects register their ``add_<method>_config`` with :func:`register_config`
when they are imported; d2ext never imports them (the entry points do, see
``d2ext_projects``), so ``get_cfg()`` has a project's keys once it is loaded.

d2ext owns the keys of its shared machinery (mapper, optimizer, schedule,
user datasets). Where a public implementation already named a key (MaskFormer's
``SOLVER.OPTIMIZER``, ``INPUT.COLOR_AUG_SSD``, ...), the same name and meaning is used.
"""
from __future__ import annotations

from typing import Callable

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as _detectron2_get_cfg

from d2ext.registry import NamedRegistry

__all__ = ["CONFIG_ADDERS", "add_d2ext_config", "get_cfg", "register_config"]

# name (the method) -> add_<method>_config(cfg), which only adds keys under its namespace.
CONFIG_ADDERS: NamedRegistry[Callable[[CN], None]] = NamedRegistry(
    "D2EXT_CONFIG_ADDERS",
    hint="A project registers its keys with d2ext.config.register_config when it is imported.",
)


def register_config(name: str, add_config: Callable[[CN], None]) -> Callable[[CN], None]:
    """Makes ``get_cfg()`` call ``add_config(cfg)``; ``name`` is the method's (unique)."""
    return CONFIG_ADDERS.register(name, add_config)


def add_d2ext_config(cfg: CN) -> None:
    """Adds d2ext's keys with their defaults; never changes an existing default."""
    cfg.D2EXT = CN()
    # User datasets registered from the config alone: a list of dicts, each like
    # {"NAME": "my_train", "TYPE": "coco_instances", "JSON": ..., "IMAGE_ROOT": ...}
    # (see d2ext.data.datasets.user and README "Register your own dataset").
    cfg.D2EXT.DATASETS = []
    # Targets the common mapper builds for training ("instances", "sem_seg",
    # "segments", or a project's registered builder). Empty: what the
    # meta-architecture declares in d2ext.model_io.
    cfg.D2EXT.TARGETS = []
    # Number of images of toy_unlabeled_train (self-supervised pretraining).
    cfg.D2EXT.TOY_UNLABELED_NUM_IMAGES = 5000
    # Exact resume: the training data stream (sample order, augmentations) and
    # each step's randomness are keyed by position / iteration and saved in the
    # checkpoint, so a resumed run trains as an uninterrupted one
    # (d2ext.data.resumable_loader). False: detectron2's loader and seeding,
    # whose data order restarts on resume.
    cfg.D2EXT.RESUMABLE_DATA = True

    # Common mapper augmentations beyond detectron2's resize / flip / crop.
    cfg.INPUT.COLOR_AUG_SSD = False
    # Category-area-constrained crop: no single category may cover more than
    # this fraction of the crop (1.0 disables the constraint).
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad training images (and targets, with the ignore label) to this
    # divisibility in the mapper; -1 leaves padding to the model.
    cfg.INPUT.SIZE_DIVISIBILITY = -1

    # Optimizer: "SGD" or "ADAMW"; the backbone's LR is scaled by the multiplier.
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    # Weight decay of embedding parameters (e.g. learned queries).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # "WarmupPolyLR": lr = base_lr * (1 - iter / max_iter) ** POWER (+ warmup).
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0

    # Backbones of the public implementations (d2ext.modeling.backbone), with
    # their official keys; a config that already has them keeps its values.
    if "SWIN" not in cfg.MODEL:
        from d2ext.modeling.backbone.swin import add_swin_config

        add_swin_config(cfg)
    # detectron2 DeepLab's ResNet keys (build_resnet_deeplab_backbone; a plain
    # ResNet reads none of them), with DeepLab's defaults.
    if "STEM_TYPE" not in cfg.MODEL.RESNETS:
        cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"  # "basic" or "deeplab"
    if "RES4_DILATION" not in cfg.MODEL.RESNETS:
        cfg.MODEL.RESNETS.RES4_DILATION = 1
    if "RES5_MULTI_GRID" not in cfg.MODEL.RESNETS:
        # res5 block i has dilation RES5_DILATION * RES5_MULTI_GRID[i]
        cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]


def get_cfg() -> CN:
    """detectron2 defaults + d2ext keys + the keys of every registered project.

    Adders run in name order; since each only adds its own namespace, any order
    gives the same config.
    """
    cfg = _detectron2_get_cfg()
    add_d2ext_config(cfg)
    for _, add_config in CONFIG_ADDERS.items():
        add_config(cfg)
    return cfg
