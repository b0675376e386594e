"""ICNet's three branches as one detectron2 backbone: the image cascade.

Shapes, for a normalized batch padded to a multiple of 32 (``SemanticSegmentor``
pads to ``size_divisibility``)::

    image    (N, 3, H, W)
    medium   (N, C3, H/16, W/16)    res3 of the 1/2 image; C3 = 128 (R18), 512 (R50)
    low      (N, L, H/32, W/32)     dilated res5 + pyramid pooling; L = LOW_CHANNELS
    high     (N, C_hi, H/8, W/8)    three 3x3 stride-2 convs of the image; C_hi = HIGH_CHANNELS[-1]

The ResNet is detectron2's, with res4 and res5 trading their stride for
dilation (2 and 4, as in PSPNet) so that it stops at 1/8 of its input. One
ResNet serves the low and the medium branch (shared weights).

The image pyramid is built by 2x2 averaging: on even sizes that is exactly
bilinear resizing by 1/2 (no corner alignment), and twice over it gives the
1/4 image without the aliasing of a single bilinear x1/4 resize.
"""
from __future__ import annotations

from typing import Dict, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone

__all__ = ["ICNetBackbone", "PyramidPooling", "dilate_stage"]

LOW_BRANCH_INPUTS = ("image", "feature")


def dilate_stage(stage: nn.Sequential, dilation: int) -> None:
    """Trades a ResNet stage's stride for dilation, in place.

    Every convolution of the stage gets stride 1 (only the first block's
    strided conv and shortcut had stride 2) and every 3x3 convolution gets
    ``dilation`` with the padding that keeps the size. Parameters are untouched,
    so checkpoints of the plain ResNet still load.
    """
    for block in stage:
        for module in block.modules():
            if isinstance(module, nn.Conv2d):
                module.stride = (1, 1)
                if module.kernel_size == (3, 3):
                    module.dilation = (dilation, dilation)
                    module.padding = (dilation, dilation)
            elif "Deform" in type(module).__name__:
                raise ValueError("ICNet's dilated ResNet does not support deformable convolutions")
        block.stride = 1


def _conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, norm: str,
                    stride: int = 1) -> Conv2d:
    conv = Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
        bias=not norm, norm=get_norm(norm, out_channels), activation=F.relu_,
    )
    weight_init.c2_msra_fill(conv)
    return conv


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling, then a 1x1 projection (ICNet's "conv5_4_k1").

    For each bin b, the input is average-pooled to b x b and upsampled back
    (bilinear). ``mode="concat"`` (PSPNet, the ICNet paper): each pooled map is
    first reduced to C / len(bins) channels (1x1 conv + norm + ReLU) and all are
    concatenated with the input (2C channels). ``mode="sum"`` (official ICNet
    deploy network): the pooled maps are added to the input as they are.

    Input (N, C, h, w) of any size; output (N, out_channels, h, w).

    In "concat" mode, training normalizes the 1x1 pooled map over the batch, so
    batch-statistics norms need more than one image per norm group (BN raises
    on a single 1x1 map; naiveSyncBN across processes is fine).
    """

    def __init__(self, in_channels: int, out_channels: int, bins: Sequence[int] = (1, 2, 3, 6),
                 mode: str = "concat", norm: str = "BN"):
        super().__init__()
        if mode not in ("concat", "sum"):
            raise ValueError(f"pyramid pooling mode must be 'concat' or 'sum', got {mode!r}")
        self.bins = tuple(int(b) for b in bins)
        self.mode = mode
        if mode == "concat":
            reduced = in_channels // len(self.bins)
            self.reduce = nn.ModuleList(
                [_conv_norm_relu(in_channels, reduced, 1, norm) for _ in self.bins]
            )
            project_in = in_channels + reduced * len(self.bins)
        else:
            self.reduce = None
            project_in = in_channels
        self.project = _conv_norm_relu(project_in, out_channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = []
        for i, b in enumerate(self.bins):
            p = F.adaptive_avg_pool2d(x, b)
            if self.reduce is not None:
                p = self.reduce[i](p)
            pooled.append(F.interpolate(p, size=size, mode="bilinear", align_corners=False))
        if self.mode == "concat":
            x = torch.cat([x] + pooled, dim=1)
        else:
            x = x + torch.stack(pooled).sum(dim=0)
        return self.project(x)


@BACKBONE_REGISTRY.register()
class ICNetBackbone(Backbone):
    """Low-, medium- and high-resolution branches of ICNet.

    ``forward`` returns ``{"low", "medium", "high"}`` (see the module docstring);
    each branch is also callable on its own (``forward_low``, ``forward_medium``,
    ``forward_high``), which the per-branch benchmark uses.
    """

    @configurable
    def __init__(
        self,
        *,
        resnet: ResNet,
        low_branch_input: str = "image",
        low_channels: int = 256,
        high_channels: Sequence[int] = (32, 32, 64),
        ppm_bins: Sequence[int] = (1, 2, 3, 6),
        ppm_mode: str = "concat",
        norm: str = "BN",
        res4_dilation: int = 2,
        res5_dilation: int = 4,
    ):
        """
        Args:
            resnet: detectron2 ResNet with stages res2..res5 and output stride 32
                (undilated); res4 and res5 are dilated here, in place.
            low_branch_input: "image" (the paper: the 1/4 image through the whole
                ResNet) or "feature" (deploy network: res3 of the medium branch,
                downsampled x2, through res4 and res5).
            low_channels: channels of the low branch's output.
            high_channels: channels of the high branch's three stride-2 convs.
            ppm_bins, ppm_mode: see :class:`PyramidPooling`.
            norm: normalization of the high branch and pyramid pooling.
        """
        super().__init__()
        if low_branch_input not in LOW_BRANCH_INPUTS:
            raise ValueError(
                f"low_branch_input must be one of {LOW_BRANCH_INPUTS}, got {low_branch_input!r}"
            )
        shapes = resnet.output_shape()
        if "res5" not in shapes or shapes["res5"].stride != 32:
            raise ValueError("ICNetBackbone needs an undilated ResNet that returns res5 at stride 32")
        if len(high_channels) != 3:
            raise ValueError(f"the high branch has 3 convolutions, got channels {high_channels}")
        dilate_stage(resnet.res4, res4_dilation)
        dilate_stage(resnet.res5, res5_dilation)
        self.resnet = resnet
        self.low_branch_input = low_branch_input

        res3_channels = resnet.res3[-1].out_channels
        res5_channels = resnet.res5[-1].out_channels
        self.ppm = PyramidPooling(res5_channels, low_channels, ppm_bins, ppm_mode, norm)
        convs, in_channels = [], resnet.stem.in_channels
        for channels in high_channels:
            convs.append(_conv_norm_relu(in_channels, channels, 3, norm, stride=2))
            in_channels = channels
        self.high_branch = nn.Sequential(*convs)
        self._out_shapes = {
            "low": ShapeSpec(channels=low_channels, stride=32),
            "medium": ShapeSpec(channels=res3_channels, stride=16),
            "high": ShapeSpec(channels=high_channels[-1], stride=8),
        }
        self._out_features = list(self._out_shapes)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> dict:
        if cfg.MODEL.RESNETS.RES5_DILATION != 1:
            raise ValueError(
                "ICNetBackbone dilates res4/res5 itself (MODEL.ICNET.RES4_DILATION / "
                "RES5_DILATION); leave MODEL.RESNETS.RES5_DILATION at 1"
            )
        resnet_cfg = cfg.clone()  # a private copy: the caller's config stays as it is
        resnet_cfg.defrost()
        resnet_cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
        ic = cfg.MODEL.ICNET
        return {
            "resnet": build_resnet_backbone(resnet_cfg, input_shape),
            "low_branch_input": ic.LOW_BRANCH_INPUT,
            "low_channels": ic.LOW_CHANNELS,
            "high_channels": tuple(ic.HIGH_CHANNELS),
            "ppm_bins": tuple(ic.PPM_BINS),
            "ppm_mode": ic.PPM_MODE,
            "norm": ic.NORM,
            "res4_dilation": ic.RES4_DILATION,
            "res5_dilation": ic.RES5_DILATION,
        }

    @property
    def size_divisibility(self) -> int:
        return 32

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._out_shapes)

    # -- branches -------------------------------------------------------------
    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, C, h/2, w/2), h and w even: 2x2 averages."""
        return F.avg_pool2d(x, 2)

    def forward_medium(self, half_image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H/2, W/2) -> res3 at 1/16 of the full image, (N, C3, H/16, W/16)."""
        r = self.resnet
        return r.res3(r.res2(r.stem(half_image)))

    def forward_low(self, x: torch.Tensor) -> torch.Tensor:
        """The low branch from its input: the 1/4 image (N, 3, H/4, W/4) when
        ``low_branch_input == "image"``, the medium branch's output
        (N, C3, H/16, W/16) when "feature". Returns (N, L, H/32, W/32)."""
        r = self.resnet
        if self.low_branch_input == "image":
            x = r.res3(r.res2(r.stem(x)))
        else:
            x = self.downsample(x)
        return self.ppm(r.res5(r.res4(x)))

    def forward_high(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, C_hi, H/8, W/8)."""
        return self.high_branch(image)

    def forward(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            image: (N, 3, H, W) normalized, H and W multiples of 32.
        Returns:
            {"low": (N, L, H/32, W/32), "medium": (N, C3, H/16, W/16),
             "high": (N, C_hi, H/8, W/8)}
        """
        h, w = image.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"ICNetBackbone needs H and W divisible by 32, got {h}x{w} (pad first)")
        half = self.downsample(image)
        medium = self.forward_medium(half)
        low = self.forward_low(self.downsample(half) if self.low_branch_input == "image" else medium)
        return {"low": low, "medium": medium, "high": self.forward_high(image)}
