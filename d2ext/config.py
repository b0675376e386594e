"""The one way to get a config: detectron2's defaults + d2ext's keys + every project's keys.

d2ext owns the keys of its shared machinery (mapper, optimizer, schedule,
user datasets). Where a public implementation already named a key (MaskFormer's
``SOLVER.OPTIMIZER``, ``INPUT.COLOR_AUG_SSD``, ...), the same name and meaning is used.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as _detectron2_get_cfg


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


def get_cfg() -> CN:
    """detectron2 defaults + d2ext keys + the keys of every installed project."""
    cfg = _detectron2_get_cfg()
    add_d2ext_config(cfg)
    try:
        import projects
    except ImportError:  # d2ext used on its own, without the projects package
        return cfg
    projects.add_project_configs(cfg)
    return cfg
