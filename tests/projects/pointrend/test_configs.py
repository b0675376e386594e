"""Config files: ours and detectron2's published PointRend configs load and build.

The published files are reproduced below (keys and values of
facebookresearch/detectron2 projects/PointRend/configs), with only their
_BASE_ pointing at this repository's Base-RCNN-FPN.yaml.
"""
import glob
import os

import d2ext  # noqa: F401

import pytest
from detectron2.modeling import build_model

from d2ext.config import get_cfg
from d2ext.engine import load_cfg
from d2ext_projects.pointrend import ImplicitPointRendMaskHead, PointRendMaskHead, PointRendSemSegHead
from tests.conftest import REPO_ROOT

BASE = os.path.join(REPO_ROOT, "configs", "Base-RCNN-FPN.yaml")

PUBLISHED = {
    "Base-PointRend-RCNN-FPN.yaml": f"""
_BASE_: "{BASE}"
MODEL:
  ROI_HEADS:
    NAME: "PointRendROIHeads"
    IN_FEATURES: ["p2", "p3", "p4", "p5"]
  ROI_BOX_HEAD:
    TRAIN_ON_PRED_BOXES: True
  ROI_MASK_HEAD:
    NAME: "CoarseMaskHead"
    FC_DIM: 1024
    NUM_FC: 2
    OUTPUT_SIDE_RESOLUTION: 7
    IN_FEATURES: ["p2"]
    POINT_HEAD_ON: True
  POINT_HEAD:
    FC_DIM: 256
    NUM_FC: 3
    IN_FEATURES: ["p2"]
INPUT:
  MASK_FORMAT: "bitmask"
""",
    "pointrend_rcnn_R_50_FPN_3x_coco.yaml": """
_BASE_: Base-PointRend-RCNN-FPN.yaml
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl
  MASK_ON: true
  RESNETS:
    DEPTH: 50
SOLVER:
  STEPS: (210000, 250000)
  MAX_ITER: 270000
""",
    "pointrend_rcnn_R_50_FPN_1x_cityscapes.yaml": """
_BASE_: Base-PointRend-RCNN-FPN.yaml
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl
  MASK_ON: true
  RESNETS:
    DEPTH: 50
  ROI_HEADS:
    NUM_CLASSES: 8
  POINT_HEAD:
    NUM_CLASSES: 8
DATASETS:
  TEST: ("cityscapes_fine_instance_seg_val",)
  TRAIN: ("cityscapes_fine_instance_seg_train",)
SOLVER:
  BASE_LR: 0.01
  IMS_PER_BATCH: 8
  MAX_ITER: 24000
  STEPS: (18000,)
INPUT:
  MAX_SIZE_TEST: 2048
  MAX_SIZE_TRAIN: 2048
  MIN_SIZE_TEST: 1024
  MIN_SIZE_TRAIN: (800, 832, 864, 896, 928, 960, 992, 1024)
""",
    "Base-Implicit-PointRend.yaml": f"""
_BASE_: "{BASE}"
MODEL:
  MASK_ON: true
  ROI_MASK_HEAD:
    NAME: "ImplicitPointRendMaskHead"
    POOLER_TYPE: ""
    FC_DIM: 1024
    NUM_FC: 2
  POINT_HEAD:
    NAME: "ImplicitPointHead"
    FC_DIM: 256
    NUM_FC: 3
    IN_FEATURES: ["p2"]
    NUM_CLASSES: 80
    CLS_AGNOSTIC_MASK: False
    TRAIN_NUM_POINTS: 196
    SUBDIVISION_STEPS: 3
    SUBDIVISION_NUM_POINTS: 784
  IMPLICIT_POINTREND:
    IMAGE_FEATURE_ENABLED: True
    POS_ENC_ENABLED: True
    PARAMS_L2_REGULARIZER: 0.00001
INPUT:
  MASK_FORMAT: "bitmask"
""",
    "implicit_pointrend_R_50_FPN_1x_coco.yaml": """
_BASE_: "Base-Implicit-PointRend.yaml"
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-50.pkl
  RESNETS:
    DEPTH: 50
""",
    "Base-PointRend-Semantic-FPN.yaml": f"""
_BASE_: "{BASE}"
MODEL:
  META_ARCHITECTURE: "SemanticSegmentor"
  BACKBONE:
    FREEZE_AT: 0
  SEM_SEG_HEAD:
    NAME: "PointRendSemSegHead"
  POINT_HEAD:
    NUM_CLASSES: 54
    FC_DIM: 256
    NUM_FC: 3
    IN_FEATURES: ["p2"]
    TRAIN_NUM_POINTS: 1024
    SUBDIVISION_STEPS: 2
    SUBDIVISION_NUM_POINTS: 8192
    COARSE_SEM_SEG_HEAD_NAME: "SemSegFPNHead"
DATASETS:
  TRAIN: ("coco_2017_train_panoptic_stuffonly",)
  TEST: ("coco_2017_val_panoptic_stuffonly",)
""",
    "pointrend_semantic_R_101_FPN_1x_cityscapes.yaml": """
_BASE_: Base-PointRend-Semantic-FPN.yaml
MODEL:
  WEIGHTS: detectron2://ImageNetPretrained/MSRA/R-101.pkl
  RESNETS:
    DEPTH: 101
  SEM_SEG_HEAD:
    NUM_CLASSES: 19
  POINT_HEAD:
    NUM_CLASSES: 19
    TRAIN_NUM_POINTS: 2048
    SUBDIVISION_NUM_POINTS: 8192
DATASETS:
  TRAIN: ("cityscapes_fine_sem_seg_train",)
  TEST: ("cityscapes_fine_sem_seg_val",)
SOLVER:
  BASE_LR: 0.01
  STEPS: (40000, 55000)
  MAX_ITER: 65000
  IMS_PER_BATCH: 32
INPUT:
  MIN_SIZE_TRAIN: (512, 768, 1024, 1280, 1536, 1792, 2048)
  MIN_SIZE_TRAIN_SAMPLING: "choice"
  MIN_SIZE_TEST: 1024
  MAX_SIZE_TRAIN: 4096
  MAX_SIZE_TEST: 2048
  CROP:
    ENABLED: True
    TYPE: "absolute"
    SIZE: (512, 1024)
    SINGLE_CATEGORY_MAX_AREA: 0.75
  COLOR_AUG_SSD: True
DATALOADER:
  NUM_WORKERS: 10
""",
}

EXPECTED_HEAD = {
    "pointrend_rcnn_R_50_FPN_3x_coco.yaml": PointRendMaskHead,
    "pointrend_rcnn_R_50_FPN_1x_cityscapes.yaml": PointRendMaskHead,
    "implicit_pointrend_R_50_FPN_1x_coco.yaml": ImplicitPointRendMaskHead,
    "pointrend_semantic_R_101_FPN_1x_cityscapes.yaml": PointRendSemSegHead,
}


def _head_of(model):
    if hasattr(model, "roi_heads"):
        return model.roi_heads.mask_head
    return model.sem_seg_head


@pytest.fixture(scope="module")
def published_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("published")
    for name, text in PUBLISHED.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("name", sorted(EXPECTED_HEAD))
def test_published_config_loads_and_builds(published_dir, name):
    cfg = load_cfg(str(published_dir / name))
    model = build_model(cfg)
    assert isinstance(_head_of(model), EXPECTED_HEAD[name])
    if name.startswith("pointrend_rcnn"):
        # the published form: PointRendROIHeads, ROI_MASK_HEAD.NAME CoarseMaskHead, pooler type kept
        assert cfg.MODEL.ROI_MASK_HEAD.NAME == "CoarseMaskHead" and model.roi_heads.mask_pooler is None


OURS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "pointrend", "*", "*.yaml")))


def test_our_config_files_are_all_covered():
    names = {os.path.relpath(p, os.path.join(REPO_ROOT, "configs", "pointrend")) for p in OURS}
    # a copy of each of detectron2's 8 PointRend configs (v0.6 projects/PointRend/configs)
    official = {
        "coco/pointrend_rcnn_R_50_FPN_1x_coco.yaml", "coco/pointrend_rcnn_R_50_FPN_3x_coco.yaml",
        "coco/pointrend_rcnn_R_101_FPN_3x_coco.yaml", "coco/pointrend_rcnn_X_101_32x8d_FPN_3x_coco.yaml",
        "coco/implicit_pointrend_R_50_FPN_1x_coco.yaml", "coco/implicit_pointrend_R_50_FPN_3x_coco.yaml",
        "cityscapes/pointrend_rcnn_R_50_FPN_1x_cityscapes.yaml",
        "cityscapes/pointrend_semantic_R_101_FPN_1x_cityscapes.yaml",
    }
    toy = {"toy/pointrend_rcnn_R18_FPN_toy.yaml", "toy/pointrend_semantic_R18_FPN_toy.yaml",
           "toy/implicit_pointrend_R18_FPN_toy.yaml"}
    assert names == official | toy


@pytest.mark.parametrize("path", OURS, ids=lambda p: os.path.basename(p))
def test_our_config_loads_and_builds(path):
    cfg = load_cfg(path)
    model = build_model(cfg)
    assert isinstance(_head_of(model), (PointRendMaskHead, ImplicitPointRendMaskHead, PointRendSemSegHead))
    if "toy" in path or "cityscapes" in path:
        assert cfg.INPUT.MASK_FORMAT == "bitmask"


def test_add_pointrend_config_defaults():
    cfg = get_cfg()
    assert cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS == 196
    assert cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO == 3 and cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO == 0.75
    assert cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS == 5 and cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS == 784
    assert cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION == 7 and not cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON
    assert cfg.MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER == 1e-5
