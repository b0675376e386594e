"""AdaptIS config keys, all under ``MODEL.ADAPTIS``.

Defaults are the reference's (saic-vul/adaptis) toy values unless a comment
says otherwise; the Cityscapes values go into the Cityscapes yaml. Nothing
outside ``MODEL.ADAPTIS`` is added or changed: solver, input sizes, the
backbone are the yaml files' business.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN

__all__ = ["add_adaptis_config"]


def add_adaptis_config(cfg: CN) -> None:
    """Adds MODEL.ADAPTIS.*; changes no existing default."""
    a = cfg.MODEL.ADAPTIS = CN()
    # Classes of the semantic head: every class of the panoptic dataset (things
    # first, then stuff: d2ext/data/CONVENTIONS.md). Checked against the
    # datasets' metadata when the model is built.
    a.NUM_CLASSES = 5
    # Pad the batch to a multiple of this; < 0: the backbone's size_divisibility.
    a.SIZE_DIVISIBILITY = -1

    # Feature fusion (Semantic-FPN style): the IN_FEATURES maps are each brought
    # to COMMON_STRIDE by conv + 2x upsampling steps and summed into one map F.
    a.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    a.COMMON_STRIDE = 4
    a.FUSE_DIM = 128
    a.FUSE_NORM = "GN"
    # F is bilinearly upsampled by this factor before the heads (1, 2 or 4): the
    # toy reference works at full resolution, and thin objects (d2ext's toy
    # bars are 3-7 px wide) are 1-2 pixels wide at stride 4.
    a.HEAD_UPSAMPLE = 1
    # Norm of the three heads' conv blocks ("BN" as the reference; "", "GN", "SyncBN", ...).
    a.HEAD_NORM = "BN"

    # Relative CoordConv: (y - p_y) / R, (x - p_x) / R, radial distance, clamped
    # to [-1, 1]; R in input-image pixels (toy reference 42, Cityscapes 280).
    a.NORM_RADIUS = 42.0

    # Controller: the point's feature (bilinear at the point) -> AdaIN parameters.
    a.CONTROLLER = CN()
    # "conv": NUM_LAYERS x (1x1 conv, ReLU, norm) on the whole map, then sampled at
    # the point (toy reference); "mlp": NUM_LAYERS x (linear, ReLU, norm) on the
    # sampled vector (Cityscapes reference, 3 x 128).
    a.CONTROLLER.NAME = "conv"
    a.CONTROLLER.NUM_LAYERS = 3
    a.CONTROLLER.DIM = 32

    # Instance-selection head: NUM_CONVS_BEFORE 3x3 convs on [coords, F] (the
    # first split into a per-image and a per-point part), one AdaIN,
    # NUM_CONVS_AFTER 3x3 convs at CHANNELS // 2, a 1x1 conv to one mask logit.
    a.INSTANCE_HEAD = CN()
    a.INSTANCE_HEAD.CHANNELS = 32
    a.INSTANCE_HEAD.NUM_CONVS_BEFORE = 3
    a.INSTANCE_HEAD.NUM_CONVS_AFTER = 1
    # logit = SCALE * x + BIAS (the toy reference's rescale_output: 0.2, -1.7;
    # the identity here, the toy yaml sets the reference values).
    a.INSTANCE_HEAD.OUTPUT_SCALE = 1.0
    a.INSTANCE_HEAD.OUTPUT_BIAS = 0.0

    # Semantic head on F (all classes) and proposal head on detached F:
    # NUM_CONVS x (3x3 conv, ReLU, norm) at F's channels, then a 1x1 conv.
    a.SEM_HEAD_CONVS = 3
    a.PROPOSAL_HEAD_CONVS = 2

    # Losses
    a.LOSS = CN()
    a.LOSS.MASK_WEIGHT = 1.0
    a.LOSS.MASK_ALPHA = 0.5  # toy reference; Cityscapes 0.25
    a.LOSS.MASK_GAMMA = 2.0
    a.LOSS.SEM_WEIGHT = 0.75
    a.LOSS.SEM_GAMMA = 1.0
    a.LOSS.PROPOSAL_WEIGHT = 1.0

    a.TRAIN = CN()
    # 1: backbone, fusion, instance and semantic heads train (random points, one
    # random thing per point); 2: only the proposal head trains, everything else
    # frozen and in eval mode; needs MODEL.WEIGHTS (stage 1's model_final.pth).
    a.TRAIN.STAGE = 1
    # Points per image: toy 12 (stage 1) / 32 (stage 2), Cityscapes 6 / 48.
    a.TRAIN.NUM_POINTS = 12
    # Things smaller than this (input pixels, after augmentation) get no points.
    a.TRAIN.MIN_OBJECT_AREA = 0
    # Stage 2: the mask binarisation threshold is an EMA (AdaptiveIoU of the
    # reference): each step, the best of {t - STEP, t, t + STEP} by mean IoU over
    # the batch, t <- MOMENTUM t + (1 - MOMENTUM) best. Kept in a model buffer.
    a.TRAIN.IOU_THRESH_INIT = 0.35
    a.TRAIN.IOU_THRESH_STEP = 0.025
    a.TRAIN.IOU_THRESH_MOMENTUM = 0.99
    # Stage-2 labels: points scoring above 0.95 x this percentile of the image's
    # scores are "good" (0.99 x the minimum when the IoU spread is <= 0.1).
    a.TRAIN.BAD_PERCENTILE = 30.0

    # Inference (the reference notebooks' toy values)
    a.TEST = CN()
    a.TEST.MASK_THRESH = 0.4  # thresh1: a mask is p > this
    a.TEST.OVERLAP_THRESH = 0.5  # thresh2: reject a mask this much already covered
    a.TEST.THING_PROB_THRESH = 0.3  # ithresh: no proposals where max thing prob < this
    a.TEST.PROPOSAL_THRESH = 0.10  # local maxima of the proposal map above this
    a.TEST.PROPOSAL_BLUR = 2  # box blur kernel size (1: none)
    a.TEST.PROPOSAL_POWER = 2.0  # proposal map = sigmoid(logit) ** this
    # A local maximum is the largest value in its LOCAL_MAX_KERNEL window.
    a.TEST.LOCAL_MAX_KERNEL = 3
    a.TEST.MAX_ITERS = 100  # candidates examined, at most
    # "proposals": the proposal map's local maxima (stage 2); "random": MAX_ITERS
    # random pixels where the largest thing probability >= THING_PROB_THRESH, in a
    # random order seeded by RANDOM_SEED (a stage-1 model, whose proposal head is untrained).
    a.TEST.CANDIDATES = "proposals"
    a.TEST.RANDOM_SEED = 0
    a.TEST.MIN_AREA = 10  # reject masks smaller than this (input pixels)
    # Candidates whose masks are predicted in one forward of the instance head;
    # 1 is the reference's one-at-a-time loop (the same result, more forwards).
    a.TEST.CHUNK_SIZE = 16
    # Panoptic: background score = STUFF_PROB_MULT * (1 - sum of thing probabilities).
    a.TEST.STUFF_PROB_MULT = 1.0
