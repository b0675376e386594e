"""Helpers of the PointRend tests: tiny configs built from the toy yamls (the tiny toy
dataset is the shared ``tiny_toy`` fixture of tests/conftest.py)."""
import os

import d2ext  # noqa: F401  (compat before detectron2)

import d2ext_projects.pointrend  # noqa: F401  (its config keys and heads, for files run alone)

from d2ext.engine import load_cfg
from tests.conftest import REPO_ROOT

TOY_CONFIGS = os.path.join(REPO_ROOT, "configs", "pointrend", "toy")
INSTANCE = os.path.join(TOY_CONFIGS, "pointrend_rcnn_R18_FPN_toy.yaml")
IMPLICIT = os.path.join(TOY_CONFIGS, "implicit_pointrend_R18_FPN_toy.yaml")
SEMANTIC = os.path.join(TOY_CONFIGS, "pointrend_semantic_R18_FPN_toy.yaml")

# Narrow layers: the tests check behaviour, not accuracy.
TINY = [
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_MASK_HEAD.FC_DIM", "64",
    "MODEL.POINT_HEAD.FC_DIM", "32",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "TEST.DETECTIONS_PER_IMAGE", "10",
]


def tiny_cfg(config_file: str, *opts):
    cfg = load_cfg(config_file, [*TINY, *opts])
    return cfg
