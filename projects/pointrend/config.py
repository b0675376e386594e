"""PointRend's config keys: those of detectron2's PointRend project, same names and defaults.

``INPUT.COLOR_AUG_SSD`` and ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``, which
detectron2's project also adds, are d2ext's (``d2ext.config``) and not repeated here.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN


def add_pointrend_config(cfg: CN) -> None:
    """Adds ``MODEL.POINT_HEAD.*``, ``MODEL.IMPLICIT_POINTREND.*`` and PointRend's
    ``MODEL.ROI_MASK_HEAD.*`` keys with their defaults."""
    # --- coarse mask head (instance segmentation)
    # Features the coarse head samples on a POOLER_RESOLUTION^2 grid in each box.
    cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES = ("p2",)
    cfg.MODEL.ROI_MASK_HEAD.FC_DIM = 1024
    cfg.MODEL.ROI_MASK_HEAD.NUM_FC = 2
    # Side of the coarse mask prediction (7 x 7).
    cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION = 7
    # Whether the point head refines the coarse masks (PointRendMaskHead,
    # and the legacy name CoarseMaskHead under PointRendROIHeads).
    cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON = False

    # --- point head
    cfg.MODEL.POINT_HEAD = CN()
    cfg.MODEL.POINT_HEAD.NAME = "StandardPointHead"
    cfg.MODEL.POINT_HEAD.NUM_CLASSES = 80
    # Fine-grained features the point head reads at each point.
    cfg.MODEL.POINT_HEAD.IN_FEATURES = ("p2",)
    # Training points per box (instance) or per image (semantic).
    cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS = 14 * 14
    # k of the paper: k * TRAIN_NUM_POINTS candidates are drawn.
    cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO = 3
    # beta of the paper: the share of the training points chosen by uncertainty.
    cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Inference: upsample x2 and recompute the most uncertain points, this many times ...
    cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS = 5
    # ... with at most this many points per step (per box / per image).
    cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS = 28 * 28
    cfg.MODEL.POINT_HEAD.FC_DIM = 256
    cfg.MODEL.POINT_HEAD.NUM_FC = 3
    cfg.MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK = False
    # Concatenate the coarse prediction to the input of every layer of the MLP.
    cfg.MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER = True
    # Coarse head of PointRendSemSegHead (a SEM_SEG_HEADS_REGISTRY name).
    cfg.MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME = "SemSegFPNHead"

    # --- Implicit PointRend
    # The per-box MLP: POINT_HEAD.NUM_FC hidden layers of POINT_HEAD.FC_DIM + an output
    # layer (detectron2's layout); its parameters are predicted per box, so their
    # number grows with the square of FC_DIM.
    cfg.MODEL.IMPLICIT_POINTREND = CN()
    # Point MLP input: a Fourier positional encoding of its box coordinates, then the
    # fine-grained features at the point (at least one of the two).
    cfg.MODEL.IMPLICIT_POINTREND.IMAGE_FEATURE_ENABLED = True
    cfg.MODEL.IMPLICIT_POINTREND.POS_ENC_ENABLED = True
    # Weight of the L2 penalty on the predicted per-box MLP parameters.
    cfg.MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER = 0.00001
