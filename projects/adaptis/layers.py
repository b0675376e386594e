"""AdaptIS building blocks: relative coordinates, AdaIN, the split first conv,
conv blocks and bilinear sampling at points.

Shapes: B images, P points (over the whole batch), C channels, (h, w) a
feature map at stride s of the (padded) input; points are (P, 2) xy in
input-image pixels (a pixel's centre at +0.5), with (P,) batch indices.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from detectron2.layers import get_norm
from torch import nn

__all__ = [
    "AdaIN",
    "SplitConv2d",
    "conv_relu_norm",
    "norm_1d",
    "relative_coords",
    "sample_at_points",
]


def relative_coords(points: torch.Tensor, size: tuple, stride: float, radius: float) -> torch.Tensor:
    """Relative CoordConv channels of each point on a map of pixel centres.

    Args:
        points: (P, 2) xy in input pixels.
        size: (h, w) of the map; its pixel (i, j) is centred at input pixel
            ((j + 0.5) * stride, (i + 0.5) * stride).
        stride: input pixels per map pixel.
        radius: R, in input pixels.

    Returns:
        (P, 3, h, w): (y - p_y) / R, (x - p_x) / R and their radial distance,
        each clamped to [-1, 1] (the distance from the unclamped offsets).
    """
    h, w = size
    ys = (torch.arange(h, device=points.device, dtype=points.dtype) + 0.5) * stride
    xs = (torch.arange(w, device=points.device, dtype=points.dtype) + 0.5) * stride
    dy = (ys[None, :, None] - points[:, 1, None, None]) / radius  # (P, h, 1)
    dx = (xs[None, None, :] - points[:, 0, None, None]) / radius  # (P, 1, w)
    dy, dx = torch.broadcast_tensors(dy, dx)
    dist = torch.sqrt(dy * dy + dx * dx)
    return torch.stack([dy, dx, dist], dim=1).clamp(-1.0, 1.0)


def sample_at_points(
    features: torch.Tensor, points: torch.Tensor, batch_index: torch.Tensor, stride: float
) -> torch.Tensor:
    """Bilinear feature of each point (the reference's 1x1 RoIAlign at the point).

    Args:
        features: (B, C, h, w) at ``stride``.
        points: (P, 2) xy in input pixels; batch_index: (P,) int64.

    Returns:
        (P, C).
    """
    b, c, h, w = features.shape
    if points.shape[0] == 0:
        return features.new_zeros((0, c))
    # align_corners=False: -1 and 1 are the outer edges of the map, i.e. input
    # pixels 0 and w * stride, so a pixel centre samples its own value.
    scale = points.new_tensor([2.0 / (w * stride), 2.0 / (h * stride)])
    grid = points * scale - 1.0  # (P, 2)
    # Every point is sampled on every image (B x P x C values, negligible next
    # to the maps) and each keeps its own image's: no per-point copy of a map.
    grid = grid[None, None].expand(b, 1, -1, 2)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[batch_index, :, 0, torch.arange(points.shape[0], device=points.device)]  # (P, C)


def norm_1d(norm: str, channels: int) -> nn.Module:
    """The 1-d counterpart of a 2-d norm name, for the MLP controller."""
    if not norm:
        return nn.Identity()
    if norm in ("BN", "SyncBN", "naiveSyncBN", "FrozenBN"):
        return nn.BatchNorm1d(channels)
    if norm in ("GN", "LN"):
        return nn.LayerNorm(channels)
    raise ValueError(f"MODEL.ADAPTIS.HEAD_NORM={norm!r}: no 1-d counterpart for the MLP controller")


def conv_relu_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> List[nn.Module]:
    """[conv, ReLU, norm], the reference heads' block order (norm after the activation)."""
    layers: List[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.ReLU(inplace=True),
    ]
    if norm:
        layers.append(get_norm(norm, out_channels))
    return layers


class SplitConv2d(nn.Module):
    """A 3x3 conv over the concatenation [coords (3), features (C)], computed as
    the sum of a per-image conv of the features and a per-point conv of the coords.

    The weight is one (out, 3 + C, k, k) tensor, the same as a plain conv over
    the concatenated input (so checkpoints are interchangeable); zero padding
    makes the split exact: conv(cat(a, b)) = conv_a(a) + conv_b(b).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, num_coords: int = 3):
        super().__init__()
        self.num_coords = num_coords
        self.padding = kernel_size // 2
        conv = nn.Conv2d(num_coords + in_channels, out_channels, kernel_size, padding=self.padding)
        self.weight, self.bias = conv.weight, conv.bias

    def image_part(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, out, h, w): the point-independent part, bias included."""
        return F.conv2d(features, self.weight[:, self.num_coords :], self.bias, padding=self.padding)

    def point_part(self, coords: torch.Tensor) -> torch.Tensor:
        """(P, 3, h, w) -> (P, out, h, w)."""
        return F.conv2d(coords, self.weight[:, : self.num_coords], None, padding=self.padding)

    def forward(self, image_part: torch.Tensor, coords: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """image_part: (B, out, h, w) from :meth:`image_part`; coords (P, 3, h, w) -> (P, out, h, w)."""
        return image_part[batch_index] + self.point_part(coords)


class AdaIN(nn.Module):
    """Instance norm without affine, then a per-point channel scale and bias
    predicted from the controller's vector; the scale starts around 1."""

    def __init__(self, latent_dim: int, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Linear(latent_dim, channels)
        self.bias = nn.Linear(latent_dim, channels)
        # Small weights: at initialisation the layer is close to a plain instance
        # norm (scale 1 + small, bias small) whatever the controller outputs.
        for layer in (self.scale, self.bias):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """x: (P, C, h, w), latent: (P, D) -> (P, C, h, w)."""
        x = F.instance_norm(x, eps=self.eps)
        scale = 1.0 + self.scale(latent)
        return x * scale[:, :, None, None] + self.bias(latent)[:, :, None, None]
