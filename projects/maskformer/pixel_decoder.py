"""Pixel decoders: backbone features -> per-pixel embeddings at the finest input stride.

Chosen by ``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``:

- ``BasePixelDecoder``: an FPN with GroupNorm (top-down path, nearest upsampling,
  1x1 lateral + 3x3 output convs), then a 3x3 conv to ``MASK_DIM`` channels.
- ``TransformerEncoderPixelDecoder``: the same, with a DETR transformer encoder
  on the lowest-resolution feature first; its output is also offered to the
  transformer decoder (``TRANSFORMER_IN_FEATURE: "transformer_encoder"``).

Parameter names are the official MaskFormer's (``adapter_i``, ``layer_i``,
``mask_features``, ``input_proj``, ``transformer.encoder``), so its checkpoints load.

Every pixel decoder's ``forward_features`` returns ``(mask_features,
transformer_encoder_features, multi_scale_features)``: (B, MASK_DIM, H/s, W/s)
with s the finest stride of ``IN_FEATURES`` (4 for res2); (B, CONVS_DIM, H/32,
W/32) or None; and the list of Mask2Former's decoder inputs, the
``MULTI_SCALE_LEVELS`` (3) coarsest outputs of the decoder, each (B, CONVS_DIM,
h_i, w_i), coarsest first (as the official Mask2Former's decoders return them).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn

from .transformer import (
    PositionEmbeddingSine,
    TransformerEncoder,
    TransformerEncoderLayer,
    TransformerParts,
    reset_transformer_parameters,
)

__all__ = [
    "MULTI_SCALE_LEVELS",
    "PIXEL_DECODER_REGISTRY",
    "BasePixelDecoder",
    "TransformerEncoderPixelDecoder",
    "build_pixel_decoder",
]

PIXEL_DECODER_REGISTRY = Registry("MASKFORMER_PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = "MaskFormer pixel decoders, named by MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME."

# Mask2Former's masked-attention decoder cycles over this many scales (1/32,
# 1/16, 1/8 for res2-res5); a constant in the official code too.
MULTI_SCALE_LEVELS = 3


def _conv(in_ch: int, out_ch: int, k: int, norm: str, relu: bool) -> Conv2d:
    conv = Conv2d(
        in_ch,
        out_ch,
        kernel_size=k,
        padding=k // 2,
        bias=not norm,
        norm=get_norm(norm, out_ch),
        activation=F.relu if relu else None,
    )
    weight_init.c2_xavier_fill(conv)
    return conv


def add_upsampled_nearest(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x + F.interpolate(y, size=x.shape[-2:], mode="nearest")``, x (B, C, H, W), y (B, C, h, w).

    At inference, when H, W are exactly 2h, 2w (padded inputs), y is added to
    ``x`` in place by broadcasting over 2 x 2 cells: the same values, without the
    upsampled copy of y (at 1/4 of the image it is as large as x).
    """
    b, c, h, w = y.shape
    if (
        torch.is_grad_enabled() or torch.jit.is_tracing() or not x.is_contiguous()
        or tuple(x.shape) != (b, c, 2 * h, 2 * w)
    ):
        return x + F.interpolate(y, size=x.shape[-2:], mode="nearest")
    x.view(b, c, h, 2, w, 2).add_(y[:, :, :, None, :, None])
    return x


@PIXEL_DECODER_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, conv_dim: int, mask_dim: int, norm: str = "GN"):
        """
        Args:
            input_shape: the features to use, name -> shape (channels, stride).
            conv_dim: channels of the FPN.
            mask_dim: channels of the per-pixel embeddings.
            norm: detectron2 norm name of the FPN convs ("GN", "" for none).
        """
        super().__init__()
        # finest first
        self.in_features = sorted(input_shape, key=lambda k: input_shape[k].stride)
        channels = [input_shape[k].channels for k in self.in_features]
        # The official MaskFormer's names, so its checkpoints load: level i (1 = finest)
        # has ``adapter_i`` (1x1 lateral conv; none at the coarsest level, whose output
        # conv reads it directly) and ``layer_i`` (3x3 output conv). The lists below only
        # index them (finest first); being plain lists, they register nothing twice.
        self.lateral_convs: List[Optional[nn.Module]] = []
        self.output_convs: List[nn.Module] = []
        for i, ch in enumerate(channels):
            coarsest = i == len(channels) - 1
            lateral = None if coarsest else _conv(ch, conv_dim, 1, norm, False)
            if lateral is not None:
                self.add_module(f"adapter_{i + 1}", lateral)
            out_in = self._top_channels(ch, conv_dim) if coarsest else conv_dim
            output = _conv(out_in, conv_dim, 3, norm, True)
            self.add_module(f"layer_{i + 1}", output)
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
        self.mask_features = _conv(conv_dim, mask_dim, 3, "", False)
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim

    @staticmethod
    def _top_channels(in_channels: int, conv_dim: int) -> int:
        return in_channels

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
        }

    def _top(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Coarsest feature -> (input of its output conv, transformer features or None)."""
        return x, None

    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[torch.Tensor]]:
        """features: name -> (B, C_i, H/s_i, W/s_i) -> (mask_features, encoder
        features or None, multi-scale features coarsest first); module docstring."""
        top, encoded = self._top(features[self.in_features[-1]])
        y = self.output_convs[-1](top)
        multi_scale = [y]
        for i in range(len(self.in_features) - 2, -1, -1):
            x = self.lateral_convs[i](features[self.in_features[i]])
            y = add_upsampled_nearest(x, y)
            y = self.output_convs[i](y)
            multi_scale.append(y)
        return self.mask_features(y), encoded, multi_scale[:MULTI_SCALE_LEVELS]

    def forward(self, features):
        return self.forward_features(features)


@PIXEL_DECODER_REGISTRY.register()
class TransformerEncoderPixelDecoder(BasePixelDecoder):
    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: str = "GN",
        enc_layers: int = 6,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        pre_norm: bool = False,
    ):
        """As :class:`BasePixelDecoder`, plus a transformer encoder of ``enc_layers``
        layers (width ``conv_dim``) on the coarsest feature, after a 1x1 projection."""
        super().__init__(input_shape, conv_dim=conv_dim, mask_dim=mask_dim, norm=norm)
        coarsest = self.in_features[-1]
        self.input_proj = nn.Conv2d(input_shape[coarsest].channels, conv_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.input_proj)
        layer = TransformerEncoderLayer(conv_dim, nheads, dim_feedforward, dropout, "relu", pre_norm)
        # ``transformer.encoder``: the official nesting (its TransformerEncoderOnly)
        self.transformer = TransformerParts(
            encoder=TransformerEncoder(layer, enc_layers, nn.LayerNorm(conv_dim) if pre_norm else None)
        )
        reset_transformer_parameters(self.transformer)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)

    @staticmethod
    def _top_channels(in_channels: int, conv_dim: int) -> int:
        return conv_dim  # the output conv reads the encoder's output

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        mf = cfg.MODEL.MASK_FORMER
        ret.update(
            enc_layers=cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS,
            nheads=mf.NHEADS,
            dim_feedforward=mf.DIM_FEEDFORWARD,
            dropout=mf.DROPOUT,
            pre_norm=mf.PRE_NORM,
        )
        return ret

    def _top(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        x = self.input_proj(x)
        b, c, h, w = x.shape
        pos = self.pe_layer(x).flatten(2).transpose(1, 2)  # (B, h*w, C)
        encoded = self.transformer.encoder(x.flatten(2).transpose(1, 2), pos)
        # contiguous: the reshaped view has channels-last strides, which would send the
        # convs reading it down another kernel path than the official code's (float32
        # rounding differences, amplified by GroupNorm over few positions)
        encoded = encoded.transpose(1, 2).reshape(b, c, h, w).contiguous()
        return encoded, encoded


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> BasePixelDecoder:
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name not in PIXEL_DECODER_REGISTRY:
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not a MaskFormer pixel decoder; "
            f"known: {sorted(k for k, _ in PIXEL_DECODER_REGISTRY)}"
        )
    return PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
