"""MaskFormer's config keys, with the names, meanings and defaults of the official
MaskFormer repository (``mask_former/config.py``), so that its yaml files load
unchanged. d2ext already owns the solver and mapper keys that repository adds
(``SOLVER.OPTIMIZER``, ``SOLVER.BACKBONE_MULTIPLIER``, ``SOLVER.WEIGHT_DECAY_EMBED``,
``INPUT.COLOR_AUG_SSD``, ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA``,
``INPUT.SIZE_DIVISIBILITY``); their MaskFormer values go into the yaml files.

Additions beyond the official MaskFormer keys, named as in Mask2Former:
``TEST.SEMANTIC_ON`` / ``TEST.INSTANCE_ON`` (which outputs inference returns),
``CLASS_WEIGHT`` and the point-sampled loss keys ``TRAIN_NUM_POINTS``,
``OVERSAMPLE_RATIO``, ``IMPORTANCE_SAMPLE_RATIO``. d2ext's own:
``MASK_LOSS_AT_TARGET_RESOLUTION`` and Mask2Former's ablation switches
``MASKED_ATTENTION``, ``SINGLE_SCALE_LEVEL``.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN

# Official mapper names -> what the d2ext common mapper builds for them
# (see projects/maskformer/targets.py).
DATASET_MAPPER_TARGETS = {
    # one segment per class present in the semantic map
    "mask_former_semantic": frozenset({"maskformer_semantic_segments"}),
    # one segment per (non-crowd) panoptic segment
    "mask_former_panoptic": frozenset({"segments"}),
    # The same targets. The official mapper's DETR augmentation (a random choice
    # between resize and resize-crop-resize) is not reproduced: the common
    # mapper's resize -> crop from INPUT.* applies, as for every model.
    "detr_panoptic": frozenset({"segments"}),
    # Mask2Former's: one segment per non-crowd instance annotation (the
    # instances' masks; MaskFormer.prepare_targets reads them), and the
    # large-scale-jitter COCO mappers (augmentations.py)
    "mask_former_instance": frozenset({"instances"}),
    "coco_instance_lsj": frozenset({"instances"}),
    "coco_panoptic_lsj": frozenset({"segments"}),
}
# mappers whose training augmentation is large-scale jitter, not INPUT.MIN_SIZE_TRAIN & co.
LSJ_MAPPERS = frozenset({"coco_instance_lsj", "coco_panoptic_lsj"})


def add_maskformer_config(cfg: CN) -> None:
    """Adds MODEL.MASK_FORMER.*, the MODEL.SEM_SEG_HEAD.* additions and
    INPUT.DATASET_MAPPER_NAME. Changes no existing default."""
    # Which official dataset mapper a config names: selects the training
    # targets (DATASET_MAPPER_TARGETS). Read only by MaskFormer.
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"

    mf = cfg.MODEL.MASK_FORMER = CN()
    # loss
    mf.DEEP_SUPERVISION = True  # the loss after every decoder layer
    mf.NO_OBJECT_WEIGHT = 0.1  # cross-entropy weight of the "no object" class
    mf.CLASS_WEIGHT = 1.0
    mf.DICE_WEIGHT = 1.0
    mf.MASK_WEIGHT = 20.0  # sigmoid focal loss
    # Point-sampled matching cost and mask loss (Mask2Former): 0 = dense
    # (MaskFormer); > 0 = this many points per mask (12544 in Mask2Former).
    mf.TRAIN_NUM_POINTS = 0
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Dense mask losses: True compares predictions upsampled (bilinear) to the
    # target masks' size (MaskFormer); False compares at the predictions' size
    # with area-downsampled targets, as the matcher does (16x fewer pixels at
    # stride 4: for CPU-sized runs).
    mf.MASK_LOSS_AT_TARGET_RESOLUTION = True

    # transformer decoder (DETR)
    mf.NHEADS = 8
    mf.DROPOUT = 0.1
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0  # encoder layers in front of the decoder, on TRANSFORMER_IN_FEATURE
    mf.DEC_LAYERS = 6
    mf.PRE_NORM = False
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    # "res5" (a backbone feature), "transformer_encoder" (the output of
    # TransformerEncoderPixelDecoder) or "pixel_embedding" (the mask features).
    mf.TRANSFORMER_IN_FEATURE = "res5"
    # Project the decoder's input feature with a 1x1 conv even when its
    # channels already equal HIDDEN_DIM.
    mf.ENFORCE_INPUT_PROJ = False

    # inference
    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = True
    mf.TEST.INSTANCE_ON = False
    mf.TEST.PANOPTIC_ON = False
    # panoptic: drop queries whose class score is not above this
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    # panoptic: drop segments whose visible area is below this fraction of their mask
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    # "probabilistic" is the only method (the official repo's "iterative" is unused)
    mf.TEST.SEMANTIC_INFERENCE_METHOD = "probabilistic"
    # Semantic: resize the masks to the output size before (True) or after
    # (False) combining them into class scores. True whenever PANOPTIC_ON or
    # INSTANCE_ON (as in the official repo): those work on resized masks.
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    # pad images to a multiple of this; < 0: the backbone's size_divisibility
    mf.SIZE_DIVISIBILITY = 32

    # The official configs' MODEL.RESNETS.STEM_TYPE / RES5_MULTI_GRID (detectron2
    # DeepLab's keys) are d2ext's (add_d2ext_config, build_resnet_deeplab_backbone).

    # pixel decoder
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0  # TransformerEncoderPixelDecoder only
    # "BasePixelDecoder" (FPN, GroupNorm) or "TransformerEncoderPixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"

    add_mask2former_config(cfg)


def add_mask2former_config(cfg: CN) -> None:
    """Mask2Former's keys (facebookresearch/Mask2Former ``mask2former/config.py``),
    same names, meanings and defaults, except ``TRANSFORMER_DECODER_NAME``: its
    default here is MaskFormer's decoder, so MaskFormer configs (which do not set
    it) keep building MaskFormer; Mask2Former's configs all set it."""
    mf = cfg.MODEL.MASK_FORMER
    # "StandardTransformerDecoder" (MaskFormer's DETR decoder) or
    # "MultiScaleMaskedTransformerDecoder" (Mask2Former); the official
    # TRANSFORMER_DECODER_REGISTRY names.
    mf.TRANSFORMER_DECODER_NAME = "StandardTransformerDecoder"
    # MSDeformAttnPixelDecoder: the features its deformable encoder reads (the
    # remaining, finer IN_FEATURES get the FPN path down to COMMON_STRIDE)
    head = cfg.MODEL.SEM_SEG_HEAD
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    # Sampling points per head and level. The official decoder defines this key but
    # always uses 4; d2ext reads it (official configs all leave it at 4).
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    # Defined, as in the official, but not read: the encoder's heads are
    # MODEL.MASK_FORMER.NHEADS there and here.
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8
    # d2ext's ablation switches of MultiScaleMaskedTransformerDecoder (not in the
    # official code, whose behaviour the defaults are): False = cross-attention
    # without the previous prediction's mask; a level 0..2 = every decoder layer
    # attends to that level only (0 = 1/32, 2 = 1/8) instead of cycling over them.
    mf.MASKED_ATTENTION = True
    mf.SINGLE_SCALE_LEVEL = -1
    # large-scale jitter (mappers "coco_instance_lsj", "coco_panoptic_lsj"):
    # scale to [MIN_SCALE, MAX_SCALE] x IMAGE_SIZE, crop / pad to IMAGE_SIZE
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0
