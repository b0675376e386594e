"""ICNet's fusion and classification: two cascade feature fusion (CFF) units,
a classifier, and the cascade label guidance losses.

Shapes (input padded to H x W, multiples of 32; K classes; C = CFF_CHANNELS)::

    low (N, L, H/32, W/32) ─┐
                            CFF ─► (N, C, H/16, W/16) ─┐
    medium (N, C3, H/16, W/16) ┘                       CFF ─► (N, C, H/8, W/8)
                                 high (N, C_hi, H/8, W/8) ┘        │ classifier, x2
                                                            logits (N, K, H/4, W/4)

Training: cross-entropy at 1/16 (auxiliary classifier of the first CFF, on the
upsampled low feature), 1/8 (the second CFF's, on the upsampled fused 1/16
feature) and 1/4 (the final logits). Inference: only the final logits, upsampled
x4 to H x W; the auxiliary classifiers are not run.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .loss import cascade_guidance_losses

__all__ = ["CascadeFeatureFusion", "ICNetHead"]

LOSS_NAMES = ("loss_guidance_1_16", "loss_guidance_1_8", "loss_sem_seg")


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _init_classifier(conv: nn.Conv2d) -> None:
    # Small initial logits: every class starts near 1/K (as PSPNet's classifiers).
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)


class CascadeFeatureFusion(nn.Module):
    """CFF unit: fuses a low-resolution feature into one of twice its resolution.

    low (N, C_low, h, w) is upsampled x2 (bilinear) and goes through a 3x3
    convolution of dilation 2 + norm; high (N, C_high, 2h, 2w) through a 1x1
    convolution + norm; their sum, after ReLU, is the output (N, C_out, 2h, 2w).
    ``aux_classifier`` (1x1 conv to K classes) is meant for the upsampled low
    feature, for label guidance during training.
    """

    def __init__(self, low_channels: int, high_channels: int, out_channels: int,
                 num_classes: int, norm: str = "BN"):
        super().__init__()
        self.conv_low = Conv2d(
            low_channels, out_channels, kernel_size=3, padding=2, dilation=2,
            bias=not norm, norm=get_norm(norm, out_channels),
        )
        self.conv_high = Conv2d(
            high_channels, out_channels, kernel_size=1, bias=not norm,
            norm=get_norm(norm, out_channels),
        )
        self.aux_classifier = Conv2d(low_channels, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.conv_low)
        weight_init.c2_msra_fill(self.conv_high)
        _init_classifier(self.aux_classifier)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns the fused feature (N, C_out, 2h, 2w) and the upsampled low
        feature (N, C_low, 2h, 2w), the input of ``aux_classifier``."""
        low_up = _upsample(low, high.shape[-2:])
        fused = F.relu_(self.conv_low(low_up) + self.conv_high(high))
        return fused, low_up


@SEM_SEG_HEADS_REGISTRY.register()
class ICNetHead(nn.Module):
    """Semantic head of ICNet on :class:`ICNetBackbone`'s features, for
    detectron2's ``SemanticSegmentor`` (same interface as ``SemSegFPNHead``)."""

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        cff_channels: int = 128,
        loss_weights: Sequence[float] = (0.4, 0.4, 1.0),
        ignore_value: int = 255,
        norm: str = "BN",
    ):
        """
        Args:
            input_shape: shapes of "low", "medium" and "high" (strides 32, 16, 8).
            num_classes: K.
            cff_channels: output channels of both CFF units.
            loss_weights: weights of the cross-entropy at 1/16, 1/8 and 1/4.
            ignore_value: label ignored by the losses.
            norm: normalization of the CFF convolutions.
        """
        super().__init__()
        strides = {k: input_shape[k].stride for k in ("low", "medium", "high")}
        if strides != {"low": 32, "medium": 16, "high": 8}:
            raise ValueError(f"ICNetHead needs low/medium/high at strides 32/16/8, got {strides}")
        if len(loss_weights) != 3:
            raise ValueError(f"need 3 loss weights (1/16, 1/8, 1/4), got {loss_weights}")
        self.ignore_value = ignore_value
        self.loss_weights = tuple(float(w) for w in loss_weights)
        self.cff_medium = CascadeFeatureFusion(
            input_shape["low"].channels, input_shape["medium"].channels, cff_channels,
            num_classes, norm,
        )
        self.cff_high = CascadeFeatureFusion(
            cff_channels, input_shape["high"].channels, cff_channels, num_classes, norm
        )
        self.classifier = Conv2d(cff_channels, num_classes, kernel_size=1)
        _init_classifier(self.classifier)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "cff_channels": cfg.MODEL.ICNET.CFF_CHANNELS,
            "loss_weights": tuple(cfg.MODEL.ICNET.LOSS_WEIGHTS),
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "norm": cfg.MODEL.ICNET.NORM,
        }

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """
        Args:
            features: the backbone's {"low", "medium", "high"}.
            targets: (N, H, W) labels at the padded input size (training only).
        Returns:
            training: (None, {"loss_guidance_1_16", "loss_guidance_1_8", "loss_sem_seg"});
            inference: ((N, K, H, W) logits, {}).
        """
        fused_16, low_up = self.cff_medium(features["low"], features["medium"])
        fused_8, fused_16_up = self.cff_high(fused_16, features["high"])
        logits_8 = self.classifier(fused_8)
        h8, w8 = logits_8.shape[-2:]
        logits_4 = _upsample(logits_8, (2 * h8, 2 * w8))
        if not self.training:
            return _upsample(logits_4, (8 * h8, 8 * w8)), {}
        if targets is None:
            raise ValueError("ICNetHead needs targets in training")
        logits = (
            self.cff_medium.aux_classifier(low_up),
            self.cff_high.aux_classifier(fused_16_up),
            logits_4,
        )
        return None, cascade_guidance_losses(
            logits, targets, self.loss_weights, LOSS_NAMES, self.ignore_value
        )
