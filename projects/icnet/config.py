"""ICNet's config keys, all under ``MODEL.ICNET``.

ICNet also reads detectron2's own keys for what they already name:
``MODEL.SEM_SEG_HEAD.{NUM_CLASSES, IGNORE_VALUE}`` (classes, ignored label),
``MODEL.RESNETS.*`` and ``MODEL.BACKBONE.FREEZE_AT`` (the ResNet shared by the
low- and medium-resolution branches; ``RESNETS.OUT_FEATURES`` is not used, and
``RESNETS.RES5_DILATION`` must stay 1: the dilations are ``MODEL.ICNET.RES*_DILATION``). Its meta-architecture is detectron2's
``SemanticSegmentor`` with ``MODEL.BACKBONE.NAME: "ICNetBackbone"`` and
``MODEL.SEM_SEG_HEAD.NAME: "ICNetHead"``.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN


def add_icnet_config(cfg: CN) -> None:
    """Adds ``MODEL.ICNET`` with its defaults (the paper's image cascade)."""
    cfg.MODEL.ICNET = CN()
    # What the low-resolution branch sees:
    #   "image":   the paper's cascade of images: the 1/4 image runs through the
    #              whole dilated ResNet (stem .. res5), weights shared with the
    #              medium branch;
    #   "feature": the official deploy network: the medium branch's res3 output
    #              (1/16) is downsampled x2 and continues through res4 and res5.
    cfg.MODEL.ICNET.LOW_BRANCH_INPUT = "image"
    # Pyramid pooling after res5: bins (output sizes of the average pooling) and
    # how the pooled maps join the input: "concat" (PSPNet, the paper) or "sum"
    # (the official deploy network).
    cfg.MODEL.ICNET.PPM_BINS = [1, 2, 3, 6]
    cfg.MODEL.ICNET.PPM_MODE = "concat"
    # Channels of the low branch's output (1x1 projection after pyramid pooling).
    cfg.MODEL.ICNET.LOW_CHANNELS = 256
    # Channels of the high branch's three 3x3 stride-2 convolutions.
    cfg.MODEL.ICNET.HIGH_CHANNELS = [32, 32, 64]
    # Output channels of both cascade feature fusion (CFF) units.
    cfg.MODEL.ICNET.CFF_CHANNELS = 128
    # Normalization of ICNet's own layers (high branch, pyramid pooling, CFF);
    # the ResNet uses MODEL.RESNETS.NORM.
    cfg.MODEL.ICNET.NORM = "BN"
    # Dilations of res4 and res5: the ResNet keeps output stride 8 (PSPNet).
    cfg.MODEL.ICNET.RES4_DILATION = 2
    cfg.MODEL.ICNET.RES5_DILATION = 4
    # Cascade label guidance: weights of the cross-entropy at 1/16, 1/8 and 1/4
    # of the input (the official training used 0.16 for the 1/16 level).
    cfg.MODEL.ICNET.LOSS_WEIGHTS = [0.4, 0.4, 1.0]
