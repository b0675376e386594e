"""MaskFormerHead: pixel decoder + transformer predictor (``MODEL.SEM_SEG_HEAD.NAME``)."""
from __future__ import annotations

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from .checkpoint_keys import upgrade_head_keys
from .pixel_decoder import build_pixel_decoder
from .predictor import build_transformer_decoder

__all__ = ["MaskFormerHead"]

_IN_FEATURES = ("transformer_encoder", "pixel_embedding", "multi_scale_pixel_decoder")


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """Parameter names are the official MaskFormer's (``pixel_decoder.adapter_i`` /
    ``layer_i``, ``predictor.transformer.{encoder,decoder}``, ...); the official .pkl
    layout and d2ext's earlier names are renamed on load (checkpoint_keys.py)."""

    @configurable
    def __init__(
        self,
        *,
        pixel_decoder: nn.Module,
        predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            pixel_decoder: features -> (mask features, encoder features or None,
                multi-scale features); see pixel_decoder.py.
            predictor: (decoder input, mask features) -> predictions; see
                predictor.TRANSFORMER_DECODER_REGISTRY.
            transformer_in_feature: what the predictor attends to: a backbone
                feature name, "transformer_encoder", "pixel_embedding" or
                "multi_scale_pixel_decoder" (Mask2Former: the list of the pixel
                decoder's coarsest scales).
        """
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.transformer_in_feature = transformer_in_feature

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head, mf = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
        feature = mf.TRANSFORMER_IN_FEATURE
        if feature == "transformer_encoder":
            if head.PIXEL_DECODER_NAME != "TransformerEncoderPixelDecoder":
                raise ValueError(
                    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE='transformer_encoder' needs "
                    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME='TransformerEncoderPixelDecoder', "
                    f"got {head.PIXEL_DECODER_NAME!r}"
                )
            in_channels = head.CONVS_DIM
        elif feature == "pixel_embedding":
            in_channels = head.MASK_DIM
        elif feature == "multi_scale_pixel_decoder":
            in_channels = head.CONVS_DIM
        elif feature in input_shape:
            in_channels = input_shape[feature].channels
        else:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={feature!r}: expected one of "
                f"{list(_IN_FEATURES)} or a backbone feature {sorted(input_shape)}"
            )
        missing = [f for f in head.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.IN_FEATURES={list(head.IN_FEATURES)}: the backbone has no "
                f"{missing} (it outputs {sorted(input_shape)}; see MODEL.RESNETS.OUT_FEATURES)"
            )
        return {
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "predictor": build_transformer_decoder(cfg, in_channels),
            "transformer_in_feature": feature,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, object]:
        """features: backbone outputs -> the predictor's outputs."""
        mask_features, encoded, multi_scale = self.pixel_decoder.forward_features(features)
        if self.transformer_in_feature == "multi_scale_pixel_decoder":
            x = multi_scale
        elif self.transformer_in_feature == "transformer_encoder":
            x = encoded
        elif self.transformer_in_feature == "pixel_embedding":
            x = mask_features
        else:
            x = features[self.transformer_in_feature]
        return self.predictor(x, mask_features)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Called before the children load: older key layouts (the official .pkl's,
        # d2ext's earlier names) are renamed here, in checkpoint_keys.py only.
        upgrade_head_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
