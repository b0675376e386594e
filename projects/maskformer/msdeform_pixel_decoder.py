"""Mask2Former's pixel decoder: a multi-scale deformable-attention encoder over the
coarser backbone levels, then an FPN path down to ``COMMON_STRIDE``.

Pure PyTorch (see :mod:`.ms_deform_attn`). Module and parameter names are the
official ones (``input_proj``, ``transformer.level_embed``,
``transformer.encoder.layers.{i}``, ``pe_layer``, ``mask_features``,
``adapter_i``, ``layer_i``) so official checkpoints load unchanged.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

from .ms_deform_attn import MSDeformAttn
from .pixel_decoder import PIXEL_DECODER_REGISTRY
from .transformer import PositionEmbeddingSine, reset_transformer_parameters


class _EncoderLayer(nn.Module):
    """Post-norm layer: deformable self-attention, then a ReLU FFN."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
        """src, pos: (B, S, C); reference_points: (B, S, L, 2)."""
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class _Encoder(nn.Module):
    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    @staticmethod
    def reference_points(spatial_shapes, batch: int, device) -> torch.Tensor:
        """Pixel centres of every level, normalised to [0, 1]: (B, S, L, 2) as (x, y).

        Without padding every level's valid ratio is 1, so each query uses the
        same normalised point on all levels.
        """
        refs = []
        for h, w in spatial_shapes.tolist():
            ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
            xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
            ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")
            refs.append(torch.stack([ref_x.reshape(-1), ref_y.reshape(-1)], -1))
        ref = torch.cat(refs, 0)
        return ref[None, :, None].expand(batch, -1, len(spatial_shapes), -1)

    def forward(self, src, spatial_shapes, level_start_index, pos, padding_mask=None):
        ref = self.reference_points(spatial_shapes, src.shape[0], src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes, level_start_index, padding_mask)
        return src


class _EncoderOnly(nn.Module):
    """Flattens the levels, adds position + level embeddings, runs the encoder."""

    def __init__(self, d_model: int, nhead: int, num_encoder_layers: int, dim_feedforward: int,
                 dropout: float, num_feature_levels: int, enc_n_points: int):
        super().__init__()
        layer = _EncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points)
        self.encoder = _Encoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        # Official init: xavier on all matrices, then the deformable-attention init again.
        reset_transformer_parameters(self)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]):
        """srcs, pos_embeds: per level (B, C, h_l, w_l).

        Returns (memory (B, S, C), spatial_shapes (L, 2), level_start_index (L,)).
        """
        shapes = torch.as_tensor([s.shape[-2:] for s in srcs], dtype=torch.long, device=srcs[0].device)
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                         for i, p in enumerate(pos_embeds)], 1)
        start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
        # No padding inside a batch here (the official passes all-False masks too).
        mask = torch.zeros(flat.shape[:2], dtype=torch.bool, device=flat.device)
        return self.encoder(flat, shapes, start, pos, mask), shapes, start


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder on ``transformer_in_features``, FPN for the rest.

    ``forward_features`` returns ``(mask_features (B, mask_dim, H/s, W/s),
    coarsest encoder output (B, conv_dim, H/32, W/32), the 3 coarsest outputs,
    coarsest first)`` with s = ``common_stride``.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: str = "",
        transformer_in_features: List[str],
        common_stride: int,
        transformer_n_points: int = 4,
    ):
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in shapes]  # finest first
        channels = [v.channels for _, v in shapes]
        trans = [(k, v) for k, v in shapes if k in transformer_in_features]
        self.transformer_in_features = [k for k, _ in trans]  # finest first
        trans_channels = [v.channels for _, v in trans]
        self.transformer_num_feature_levels = len(trans)

        # One projection per encoder level, coarsest first (the encoder's level order).
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in trans_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

        self.transformer = _EncoderOnly(
            d_model=conv_dim, nhead=transformer_nheads, num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward, dropout=transformer_dropout,
            num_feature_levels=self.transformer_num_feature_levels, enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2)  # normalised, scale 2*pi

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = 3
        self.common_stride = common_stride
        # FPN levels between the finest encoder stride and common_stride.
        finest = min(v.stride for _, v in trans)
        self.num_fpn_levels = int(round(math.log2(finest) - math.log2(common_stride)))

        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, c in enumerate(channels[: self.num_fpn_levels]):
            lateral = Conv2d(c, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
            output = Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=use_bias,
                            norm=get_norm(norm, conv_dim), activation=F.relu)
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # Plain lists (not registered twice), coarsest first to match the top-down loop.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            # As the official: dropout and heads from MASK_FORMER, a fixed 1024 FFN.
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "common_stride": head.COMMON_STRIDE,
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]):
        # Deformable attention runs in float32 (as the official disables autocast).
        with torch.autocast(device_type=next(iter(features.values())).device.type, enabled=False):
            srcs, pos = [], []
            for idx, name in enumerate(self.transformer_in_features[::-1]):
                x = features[name].float()
                srcs.append(self.input_proj[idx](x))
                pos.append(self.pe_layer(x))
            memory, shapes, _ = self.transformer(srcs, pos)
            b = memory.shape[0]
            sizes = shapes.prod(1).tolist()
            out = [z.transpose(1, 2).reshape(b, -1, int(h), int(w))
                   for z, (h, w) in zip(memory.split(sizes, dim=1), shapes.tolist())]

            for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
                lat = self.lateral_convs[idx](features[name].float())
                y = lat + F.interpolate(out[-1], size=lat.shape[-2:], mode="bilinear", align_corners=False)
                out.append(self.output_convs[idx](y))

            multi_scale = out[: self.maskformer_num_feature_levels]
            return self.mask_features(out[-1]), out[0], multi_scale

    def forward(self, features):
        return self.forward_features(features)
