"""MaskFormer's per-pixel classification baselines, heads of detectron2's
``SemanticSegmentor`` (``MODEL.SEM_SEG_HEAD.NAME``), as in the MaskFormer paper's
comparison of per-pixel vs mask classification:

- ``PerPixelBaselineHead``: a pixel decoder (``PIXEL_DECODER_NAME``) and a 1x1
  conv from its MASK_DIM embeddings to K class logits, at stride 4.
- ``PerPixelBaselinePlusHead``: the same pixel decoder and MaskFormer's
  transformer decoder without its class head, with one query per class
  (``NUM_OBJECT_QUERIES`` = ``NUM_CLASSES``): query k's mask logits are class
  k's per-pixel logits; every decoder layer is supervised with deep supervision.

Both: cross-entropy (``IGNORE_VALUE``) on the logits upsampled 4x (bilinear),
times ``LOSS_WEIGHT``; at inference the upsampled logits (B, K, H, W). The
stride 4 is fixed, as in the official heads (``COMMON_STRIDE`` is not read).
Parameter names are the official ones (``pixel_decoder.*``, ``predictor``), and
its published ``.pkl`` layout loads (checkpoint_keys.py).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from .checkpoint_keys import upgrade_head_keys
from .pixel_decoder import build_pixel_decoder
from .predictor import TransformerPredictor

__all__ = ["PerPixelBaselineHead", "PerPixelBaselinePlusHead"]

_STRIDE = 4


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselineHead(nn.Module):
    @configurable
    def __init__(
        self, *, num_classes: int, pixel_decoder: nn.Module, loss_weight: float = 1.0, ignore_value: int = -1
    ):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.loss_weight = loss_weight
        self.ignore_value = ignore_value
        self.predictor = Conv2d(pixel_decoder.mask_dim, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "ignore_value": head.IGNORE_VALUE,
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """-> (B, K, H/4, W/4) logits, and those of earlier layers (none here)."""
        mask_features = self.pixel_decoder.forward_features(features)[0]
        return self.predictor(mask_features), []

    def forward(
        self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None
    ) -> Tuple[Optional[torch.Tensor], Dict[str, torch.Tensor]]:
        """SemanticSegmentor's head interface. targets: (B, H, W) int64 labels.
        -> training (None, {"loss_sem_seg", "loss_sem_seg_{i}" per earlier layer});
        inference ((B, K, H, W) logits, {})."""
        logits, earlier = self.layers(features)
        if not self.training:
            return _upsample(logits), {}
        losses = {"loss_sem_seg": self._loss(logits, targets)}
        for i, x in enumerate(earlier):
            losses[f"loss_sem_seg_{i}"] = self._loss(x, targets)
        return None, losses

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # float: cross-entropy of half-precision logits is unstable under autocast
        loss = F.cross_entropy(_upsample(logits.float()), targets, ignore_index=self.ignore_value)
        return loss * self.loss_weight

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_head_keys(state_dict, prefix)  # the official .pkl layout
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@SEM_SEG_HEADS_REGISTRY.register()
class PerPixelBaselinePlusHead(PerPixelBaselineHead):
    @configurable
    def __init__(
        self,
        *,
        transformer_predictor: TransformerPredictor,
        transformer_in_feature: str,
        deep_supervision: bool,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
    ):
        super().__init__(
            num_classes=num_classes, pixel_decoder=pixel_decoder, loss_weight=loss_weight, ignore_value=ignore_value
        )
        self.predictor = transformer_predictor  # replaces the 1x1 conv
        self.transformer_in_feature = transformer_in_feature
        self.deep_supervision = deep_supervision

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        mf, head = cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD
        feature = mf.TRANSFORMER_IN_FEATURE
        if feature == "transformer_encoder":
            in_channels = head.CONVS_DIM
        elif feature in input_shape:
            in_channels = input_shape[feature].channels
        else:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={feature!r}: PerPixelBaselinePlusHead takes "
                f"'transformer_encoder' or a backbone feature {sorted(input_shape)}"
            )
        if mf.NUM_OBJECT_QUERIES != head.NUM_CLASSES:
            raise ValueError(
                f"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES={mf.NUM_OBJECT_QUERIES}: PerPixelBaselinePlusHead "
                f"has one query per class, so it must equal MODEL.SEM_SEG_HEAD.NUM_CLASSES={head.NUM_CLASSES}"
            )
        ret.update(
            transformer_predictor=TransformerPredictor(cfg, in_channels, mask_classification=False),
            transformer_in_feature=feature,
            deep_supervision=mf.DEEP_SUPERVISION,
        )
        return ret

    def layers(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        mask_features, encoded, _ = self.pixel_decoder.forward_features(features)
        if self.transformer_in_feature == "transformer_encoder":
            if encoded is None:
                raise ValueError(
                    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE='transformer_encoder' needs "
                    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME='TransformerEncoderPixelDecoder'"
                )
            x = encoded
        else:
            x = features[self.transformer_in_feature]
        out = self.predictor(x, mask_features)
        return out["pred_masks"], [a["pred_masks"] for a in out.get("aux_outputs", [])]


def _upsample(logits: torch.Tensor) -> torch.Tensor:
    return F.interpolate(logits, scale_factor=_STRIDE, mode="bilinear", align_corners=False)
