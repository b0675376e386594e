"""PointRend's coarse mask head: box features on a grid -> a 7 x 7 mask per class.

Architecture (PointRend paper, Sec. 4): the 14 x 14 box features go through a
stride-2 2 x 2 convolution (to 7 x 7) and ReLU, then NUM_FC fully-connected
layers of FC_DIM like Mask R-CNN's box head, then a linear layer predicting
K x 7 x 7 logits.
"""
from __future__ import annotations

from typing import Sequence

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvFCHead", "CoarseMaskHead"]


def _rename_keys(state_dict, prefix: str, renames) -> None:
    """Checkpoint upgrade: moves ``prefix + old`` keys to ``prefix + new`` for each
    (old, new) key-prefix pair, where present (keys with neither are left alone)."""
    for key in list(state_dict.keys()):
        for old, new in renames:
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
                break


def _conv_fc_renames(old_root: str, num_fc: int):
    """Old -> new key prefixes of the conv-FC layers (see ``_add_conv_fc_layers``)."""
    renames = [(f"{old_root}reduce.", "reduce_spatial_dim_conv."), (f"{old_root}predictor.", "prediction.")]
    renames += [(f"{old_root}fcs.{i}.", f"fc{i + 1}.") for i in range(num_fc)]
    # detectron2's own pre-v0.3 checkpoints (its model zoo): coarse_mask_fc{i} -> fc{i}
    renames += [(f"coarse_mask_fc{i + 1}.", f"fc{i + 1}.") for i in range(num_fc)]
    return renames


def _add_conv_fc_layers(
    module: nn.Module, in_channels: int, in_side: int, reduced_side: int, conv_dim: int,
    fc_dims: Sequence[int], out_dim: int,
) -> None:
    """Adds the conv-FC layers to ``module`` under detectron2's PointRend names (its
    ``ConvFCHead``), so that its checkpoints load as they are:
    ``reduce_channel_dim_conv`` (1x1, only if in_channels > conv_dim),
    ``reduce_spatial_dim_conv`` (kernel = stride = in_side / reduced_side), ``fc1`` ...
    ``fcN``, ``prediction``."""
    if in_side % reduced_side:
        raise ValueError(
            f"box feature side {in_side} (MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION) must be a "
            f"multiple of the coarse side {reduced_side} (MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION)"
        )
    ratio = in_side // reduced_side
    module.conv_layers = []  # plain list: the modules are registered by their names below
    if in_channels > conv_dim:
        module.reduce_channel_dim_conv = nn.Conv2d(in_channels, conv_dim, kernel_size=1)
        module.conv_layers.append(module.reduce_channel_dim_conv)
        in_channels = conv_dim
    module.reduce_spatial_dim_conv = nn.Conv2d(in_channels, conv_dim, kernel_size=ratio, stride=ratio)
    module.conv_layers.append(module.reduce_spatial_dim_conv)
    for conv in module.conv_layers:
        weight_init.c2_msra_fill(conv)
    module.fc_layers = []
    dim = conv_dim * reduced_side * reduced_side
    for i, fc_dim in enumerate(fc_dims):
        fc = nn.Linear(dim, fc_dim)
        weight_init.c2_xavier_fill(fc)
        module.add_module(f"fc{i + 1}", fc)
        module.fc_layers.append(fc)
        dim = fc_dim
    module.prediction = nn.Linear(dim, out_dim)
    nn.init.normal_(module.prediction.weight, std=0.001)
    nn.init.constant_(module.prediction.bias, 0)


def _conv_fc_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for conv in module.conv_layers:
        x = F.relu(conv(x))
    x = x.flatten(1)
    for fc in module.fc_layers:
        x = F.relu(fc(x))
    return module.prediction(x)


class ConvFCHead(nn.Module):
    """(R, C, S, S) box features -> (R, out_dim): conv (kernel = stride = S / S_out), FCs, linear.

    Parameter names are detectron2's (``_add_conv_fc_layers``). Checkpoints with d2ext's
    earlier names (``reduce``, ``fcs.{i}``, ``predictor``) are renamed on load."""

    def __init__(
        self,
        in_channels: int,
        in_side: int,
        reduced_side: int,
        conv_dim: int,
        fc_dims: Sequence[int],
        out_dim: int,
    ):
        super().__init__()
        _add_conv_fc_layers(self, in_channels, in_side, reduced_side, conv_dim, fc_dims, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_fc_forward(self, x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _rename_keys(state_dict, prefix, _conv_fc_renames("", len(self.fc_layers)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@ROI_MASK_HEAD_REGISTRY.register()
class CoarseMaskHead(BaseMaskRCNNHead):
    """The coarse head as a mask head of its own (on pooled box features, e.g. with
    ROIAlign of POOLER_RESOLUTION): Mask R-CNN's loss and inference at 7 x 7.
    ``PointRendMaskHead`` uses the same network on point-sampled box features."""

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dim: int,
        fc_dim: int,
        num_fc: int,
        output_side_resolution: int,
        **kwargs,
    ):
        """
        Args:
            input_shape: channels, height (= width) of the box features.
            num_classes: K (1: class-agnostic).
            kwargs: ``loss_weight``, ``vis_period`` of BaseMaskRCNNHead.
        """
        super().__init__(**kwargs)
        if input_shape.height != input_shape.width:
            raise ValueError(f"CoarseMaskHead needs square box features, got {input_shape}")
        self.num_classes = num_classes
        self.output_side_resolution = output_side_resolution
        side = output_side_resolution
        _add_conv_fc_layers(
            self, input_shape.channels, input_shape.height, side, conv_dim, [fc_dim] * num_fc,
            num_classes * side * side,
        )

    @classmethod
    def from_config(cls, cfg, input_shape):
        if not isinstance(input_shape, ShapeSpec):
            raise ValueError(
                "CoarseMaskHead alone takes pooled box features: set MODEL.ROI_MASK_HEAD.POOLER_TYPE "
                "(e.g. 'ROIAlignV2'), or turn MODEL.ROI_MASK_HEAD.POINT_HEAD_ON on under "
                "MODEL.ROI_HEADS.NAME: PointRendROIHeads for PointRend."
            )
        ret = super().from_config(cfg, input_shape)
        ret.update(
            input_shape=input_shape,
            num_classes=1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            conv_dim=cfg.MODEL.ROI_MASK_HEAD.CONV_DIM,
            fc_dim=cfg.MODEL.ROI_MASK_HEAD.FC_DIM,
            num_fc=cfg.MODEL.ROI_MASK_HEAD.NUM_FC,
            output_side_resolution=cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION,
        )
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        """(R, C, S, S) box features -> (R, K, 7, 7) mask logits."""
        side = self.output_side_resolution
        return _conv_fc_forward(self, x).reshape(x.shape[0], self.num_classes, side, side)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # d2ext's earlier names had the layers under ``net.`` (a ConvFCHead).
        _rename_keys(state_dict, prefix, _conv_fc_renames("net.", len(self.fc_layers)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
