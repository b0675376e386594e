"""AdaptIS heads: feature fusion, controller, instance selection, conv heads.

Shapes: B images, P points over the batch (with (P,) batch indices), C the
fused channels, (h, w) the head's map at ``stride`` input pixels per pixel.
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Sequence

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

from .layers import AdaIN, SplitConv2d, conv_relu_norm, norm_1d, relative_coords, sample_at_points

__all__ = ["ConvHead", "Controller", "FeatureFusion", "HeadState", "InstanceSelectionHead"]


class FeatureFusion(nn.Module):
    """Semantic-FPN fusion: each input map goes through log2(its stride /
    common stride) x (3x3 conv, norm, ReLU, 2x bilinear upsampling) (one conv
    at the common stride) and the maps are summed: (B, C, H / s, W / s)."""

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        in_features: Sequence[str],
        common_stride: int,
        channels: int,
        norm: str,
    ):
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.ADAPTIS.IN_FEATURES names {missing}, which the backbone does not output "
                f"(it outputs {sorted(input_shape)})"
            )
        self.in_features = list(in_features)
        self.common_stride = common_stride
        self.scale_heads = nn.ModuleList()
        for name in self.in_features:
            stride = input_shape[name].stride
            if stride < common_stride:
                raise ValueError(f"feature {name!r} has stride {stride} < MODEL.ADAPTIS.COMMON_STRIDE={common_stride}")
            steps = max(1, int(math.log2(stride) - math.log2(common_stride)))
            layers: List[nn.Module] = []
            for k in range(steps):
                conv = Conv2d(
                    input_shape[name].channels if k == 0 else channels,
                    channels,
                    kernel_size=3,
                    padding=1,
                    bias=not norm,
                    norm=get_norm(norm, channels),
                    activation=F.relu,
                )
                weight_init.c2_msra_fill(conv)
                layers.append(conv)
                if stride != common_stride:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        out = None
        for name, head in zip(self.in_features, self.scale_heads):
            y = head(features[name])
            # Padding to the size divisibility makes every level an exact
            # multiple; an input that is not padded may be off by a pixel.
            if out is None:
                out = y
                continue
            if y.shape[-2:] != out.shape[-2:]:
                y = F.interpolate(y, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + y
        return out


class ConvHead(nn.Module):
    """num_convs x (3x3 conv, ReLU, norm) at ``in_channels``, then a 1x1 conv: (B, out, h, w)."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int, norm: str):
        super().__init__()
        layers: List[nn.Module] = []
        for _ in range(num_convs):
            layers += conv_relu_norm(in_channels, in_channels, 3, norm)
        layers.append(nn.Conv2d(in_channels, out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Controller(nn.Module):
    """The point's feature -> the AdaIN latent vector (P, dim).

    "conv": num_layers x (1x1 conv, ReLU, norm) on the whole map (point-
    independent, once per image), sampled at the points; "mlp": the same as
    linear layers on the vector sampled from F.
    """

    def __init__(self, name: str, in_channels: int, dim: int, num_layers: int, norm: str):
        super().__init__()
        if name not in ("conv", "mlp"):
            raise ValueError(f"MODEL.ADAPTIS.CONTROLLER.NAME={name!r}: expected 'conv' or 'mlp'")
        self.name = name
        self.dim = dim
        layers: List[nn.Module] = []
        for k in range(num_layers):
            cin = in_channels if k == 0 else dim
            if name == "conv":
                layers += conv_relu_norm(cin, dim, 1, norm)
            else:
                layers += [nn.Linear(cin, dim), nn.ReLU(inplace=True), norm_1d(norm, dim)]
        self.layers = nn.Sequential(*layers)

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> the map points are sampled from."""
        return self.layers(features) if self.name == "conv" else features

    def forward(self, prepared: torch.Tensor, points: torch.Tensor, batch_index: torch.Tensor, stride: float) -> torch.Tensor:
        sampled = sample_at_points(prepared, points, batch_index, stride)
        return sampled if self.name == "conv" else self.layers(sampled)


class HeadState(NamedTuple):
    """What the instance head computes once per image, before any point."""

    first_conv: torch.Tensor  # (B, channels, h, w): the features' part of the first conv
    controller_map: torch.Tensor  # (B, C or dim, h, w)
    stride: float


class InstanceSelectionHead(nn.Module):
    """[relative coords, F] -> convs -> AdaIN(controller(point)) -> convs -> one
    mask logit per point: (P, 1, h, w).

    Use :meth:`prepare` once per image batch and :meth:`predict` for any number
    of points; ``forward`` is both.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: int,
        num_convs_before: int,
        num_convs_after: int,
        controller: Controller,
        norm_radius: float,
        norm: str,
        output_scale: float = 1.0,
        output_bias: float = 0.0,
    ):
        super().__init__()
        if num_convs_before < 1:
            raise ValueError("MODEL.ADAPTIS.INSTANCE_HEAD.NUM_CONVS_BEFORE must be >= 1")
        self.norm_radius = norm_radius
        self.output_scale = output_scale
        self.output_bias = output_bias
        self.controller = controller
        self.first_conv = SplitConv2d(in_channels, channels, 3)
        first_rest: List[nn.Module] = [nn.ReLU(inplace=True)]
        if norm:
            first_rest.append(get_norm(norm, channels))
        self.first_rest = nn.Sequential(*first_rest)
        before: List[nn.Module] = []
        for _ in range(num_convs_before - 1):
            before += conv_relu_norm(channels, channels, 3, norm)
        self.before = nn.Sequential(*before)
        self.adain = AdaIN(controller.dim, channels)
        after: List[nn.Module] = []
        cin = channels
        for _ in range(num_convs_after):
            after += conv_relu_norm(cin, channels // 2, 3, norm)
            cin = channels // 2
        after.append(nn.Conv2d(cin, 1, 1))
        self.after = nn.Sequential(*after)

    def prepare(self, features: torch.Tensor, stride: float) -> HeadState:
        """(B, C, h, w) fused features at ``stride`` -> the point-independent state."""
        return HeadState(self.first_conv.image_part(features), self.controller.prepare(features), stride)

    def predict(self, state: HeadState, points: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """(P, 2) xy input pixels, (P,) batch indices -> (P, 1, h, w) mask logits."""
        h, w = state.first_conv.shape[-2:]
        if points.shape[0] == 0:
            return state.first_conv.new_zeros((0, 1, h, w))
        coords = relative_coords(points, (h, w), state.stride, self.norm_radius)
        x = self.first_rest(self.first_conv(state.first_conv, coords, batch_index))
        x = self.before(x)
        latent = self.controller(state.controller_map, points, batch_index, state.stride)
        x = self.after(self.adain(x, latent))
        return self.output_scale * x + self.output_bias

    def forward(self, features: torch.Tensor, stride: float, points: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        return self.predict(self.prepare(features, stride), points, batch_index)
