"""detectron2's DeepLab ResNet (``projects/DeepLab`` of detectron2 v0.6, absent from
the pip package): ``build_resnet_deeplab_backbone``, as the official MaskFormer
``R101c`` configs name it.

It is detectron2's ResNet (the same stage and block classes) with two additions:

- ``MODEL.RESNETS.STEM_TYPE``: ``"basic"`` (detectron2's 7x7 ``BasicStem``) or
  ``"deeplab"`` (:class:`DeepLabStem`: three 3x3 convs, the first with stride 2,
  then a 3x3 max-pool; stride 4 as the basic stem);
- ``MODEL.RESNETS.RES5_MULTI_GRID``: one dilation multiplier per res5 block, so
  block i of res5 has dilation ``RES5_DILATION * RES5_MULTI_GRID[i]``;

and DeepLab's ``MODEL.RESNETS.RES4_DILATION`` (1 or 2; 2 needs ``RES5_DILATION`` 4).
A dilated stage keeps the resolution of the stage before it (stride 1 instead of 2).
As in DeepLab, only the stages up to the last of ``OUT_FEATURES`` are built.

Parameter names are the official ones (``stem.conv1/conv2/conv3`` each with ``.norm``,
``res2.0.conv1``, ...), so DeepLab's ``R-103.pkl`` and the published MaskFormer
R101c checkpoints load through ``MODEL.WEIGHTS``. The config keys (DeepLab's names
and defaults) are added by :func:`d2ext.config.add_d2ext_config`.
"""
from __future__ import annotations

from typing import List

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock, DeformBottleneckBlock, ResNet

__all__ = ["DeepLabStem", "build_resnet_deeplab_backbone", "res5_dilations"]

STEM_TYPES = ("basic", "deeplab")
BLOCKS_PER_STAGE = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class DeepLabStem(CNNBlockBase):
    """Three 3x3 conv + norm + ReLU (stride 2, 1, 1; ``out_channels // 2`` channels
    for the first two), then a 3x3 max-pool with stride 2: (N, C, H, W) ->
    (N, out_channels, H / 4, W / 4)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 128, norm: str = "BN"):
        super().__init__(in_channels, out_channels, 4)
        self.in_channels = in_channels
        mid = out_channels // 2
        for i, (c_in, c_out, stride) in enumerate(
            [(in_channels, mid, 2), (mid, mid, 1), (mid, out_channels, 1)], start=1
        ):
            conv = Conv2d(
                c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False, norm=get_norm(norm, c_out)
            )
            weight_init.c2_msra_fill(conv)
            self.add_module(f"conv{i}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.relu_(conv(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def res5_dilations(res5_dilation: int, multi_grid: List[int], num_blocks: int) -> List[int]:
    """The dilation of each res5 block: ``res5_dilation * multi_grid[i]``."""
    if len(multi_grid) != num_blocks:
        raise ValueError(
            f"MODEL.RESNETS.RES5_MULTI_GRID={list(multi_grid)} must have one multiplier per res5 "
            f"block ({num_blocks} for this MODEL.RESNETS.DEPTH)"
        )
    return [res5_dilation * m for m in multi_grid]


def _check_dilations(res4: int, res5: int) -> None:
    if res4 not in (1, 2):
        raise ValueError(f"MODEL.RESNETS.RES4_DILATION={res4} must be 1 or 2")
    if res5 not in (1, 2, 4):
        raise ValueError(f"MODEL.RESNETS.RES5_DILATION={res5} must be 1, 2 or 4")
    if res4 == 2 and res5 != 4:
        # res5 must keep dilating where res4 already does
        raise ValueError(f"MODEL.RESNETS.RES4_DILATION=2 needs MODEL.RESNETS.RES5_DILATION=4, not {res5}")


def _build_stem(cfg, input_shape: ShapeSpec) -> CNNBlockBase:
    r = cfg.MODEL.RESNETS
    if r.STEM_TYPE not in STEM_TYPES:
        raise ValueError(f"MODEL.RESNETS.STEM_TYPE={r.STEM_TYPE!r} is not one of {list(STEM_TYPES)}")
    stem_class = BasicStem if r.STEM_TYPE == "basic" else DeepLabStem
    return stem_class(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=r.NORM)


@BACKBONE_REGISTRY.register()
def build_resnet_deeplab_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """detectron2's ResNet with DeepLab's stem choice, res4 dilation and res5 multi-grid."""
    r = cfg.MODEL.RESNETS
    if r.DEPTH not in BLOCKS_PER_STAGE:
        raise ValueError(f"MODEL.RESNETS.DEPTH={r.DEPTH}: build_resnet_deeplab_backbone supports {sorted(BLOCKS_PER_STAGE)}")
    _check_dilations(r.RES4_DILATION, r.RES5_DILATION)
    stem = _build_stem(cfg, input_shape)
    blocks_per_stage = BLOCKS_PER_STAGE[r.DEPTH]
    last_stage = max({"res2": 2, "res3": 3, "res4": 4, "res5": 5}[f] for f in r.OUT_FEATURES)

    in_channels, out_channels = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    # stages past the last output would get no gradient (and break DDP's allreduce)
    for idx, stage in enumerate(range(2, last_stage + 1)):
        dilation = {4: r.RES4_DILATION, 5: r.RES5_DILATION}.get(stage, 1)
        num_blocks = blocks_per_stage[idx]
        first_stride = 1 if idx == 0 or dilation > 1 else 2
        kwargs = dict(
            num_blocks=num_blocks,
            stride_per_block=[first_stride] + [1] * (num_blocks - 1),
            in_channels=in_channels,
            out_channels=out_channels,
            bottleneck_channels=bottleneck_channels,
            stride_in_1x1=r.STRIDE_IN_1X1,
            num_groups=r.NUM_GROUPS,
            norm=r.NORM,
        )
        if stage == 5:
            kwargs["dilation_per_block"] = res5_dilations(dilation, r.RES5_MULTI_GRID, num_blocks)
        else:
            kwargs["dilation"] = dilation
        if r.DEFORM_ON_PER_STAGE[idx]:
            kwargs.update(
                block_class=DeformBottleneckBlock,
                deform_modulated=r.DEFORM_MODULATED,
                deform_num_groups=r.DEFORM_NUM_GROUPS,
            )
        else:
            kwargs["block_class"] = BottleneckBlock
        stages.append(ResNet.make_stage(**kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(stem, stages, out_features=r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
