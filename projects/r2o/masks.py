"""R2O's mask prediction around the clustering: region embeddings pooled per
superpixel, cluster labels painted back onto the whole image, and each view's
masks cut out of that map.

Shapes: B images, C channels, (h, w) a feature map of the whole image,
(H, W) = (G, G) the whole image's pixels (its superpixel map), n the
superpixel labels of an image (0..n-1), R the present superpixels of the
batch, k clusters, g = G / PAINT_STRIDE the painted map's side, (h5, w5) a
view's feature grid.

What differs from the reference: features are pooled over every pixel of a
superpixel (it interpolates the label map down to the feature grid and loses
small superpixels), only present superpixels become rows (it clusters all-zero
padding rows), and labels are painted as exact per-cluster area fractions (it
truncates blended one-hot values, mislabelling about 6 % of the pixels).
"""
from __future__ import annotations

from typing import Tuple

import torch
from torchvision.ops import roi_align

__all__ = ["superpixel_pool", "region_label_table", "paint_clusters", "view_masks"]


def _check_labels(superpixels: torch.Tensor, name: str) -> None:
    if superpixels.dim() != 3 or superpixels.dtype != torch.int64:
        raise ValueError(
            f"{name}: superpixels must be (B, H, W) int64, got {tuple(superpixels.shape)} {superpixels.dtype}"
        )
    if superpixels.numel() and int(superpixels.min()) < 0:
        raise ValueError(f"{name}: superpixel labels must be >= 0 (SLIC labels 0..n-1 of each image)")


@torch.no_grad()
def superpixel_pool(
    features: torch.Tensor, superpixels: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The area-weighted mean feature of every present superpixel.

    Each pixel of the superpixel map belongs to the feature cell
    (floor(y * h / H), floor(x * w / W)) -- the cell that covers it when H and
    W are multiples of h and w (a backbone's stride), and nearest upsampling
    otherwise. A superpixel's embedding is the mean over its pixels of their
    cells' features, i.e. the features weighted by the superpixel's area in
    each cell, computed from per-cell pixel counts (no (n, H, W) one-hot).

    Args:
        features: (B, C, h, w), e.g. the momentum encoder's res4 of the whole image.
        superpixels: (B, H, W) int64 labels >= 0, H >= h, W >= w.

    Returns:
        embeddings: (R, C) float, not normalised.
        image_index: (R,) int64, the image of each row.
        region_index: (R,) int64, its superpixel label; rows ordered by image, then label.
    """
    _check_labels(superpixels, "superpixel_pool")
    b, c, h, w = features.shape
    bs, height, width = superpixels.shape
    if bs != b or height < h or width < w:
        raise ValueError(
            f"superpixel_pool: features {tuple(features.shape)} do not match superpixels {tuple(superpixels.shape)}"
        )
    device = features.device
    superpixels = superpixels.to(device)
    n = int(superpixels.max()) + 1
    cell_y = torch.arange(height, device=device) * h // height
    cell_x = torch.arange(width, device=device) * w // width
    cell = cell_y[:, None] * w + cell_x[None, :]  # (H, W) in [0, h * w)
    image = torch.arange(b, device=device)[:, None, None]
    key = (image * n + superpixels) * (h * w) + cell  # (B, H, W)
    counts = torch.bincount(key.flatten(), minlength=b * n * h * w).view(b, n, h * w)
    area = counts.sum(-1)  # (B, n) pixels per superpixel
    weights = counts.to(torch.float32) / area.clamp(min=1)[..., None].to(torch.float32)
    pooled = torch.bmm(weights, features.flatten(2).transpose(1, 2).float())  # (B, n, C)
    image_index, region_index = (area > 0).nonzero(as_tuple=True)
    return pooled[image_index, region_index].to(features.dtype), image_index, region_index


def region_label_table(
    labels: torch.Tensor, image_index: torch.Tensor, region_index: torch.Tensor, num_images: int, num_regions: int
) -> torch.Tensor:
    """(R,) cluster labels of the rows of ``superpixel_pool`` -> (B, n) int64
    table of each (image, superpixel)'s cluster, -1 where a superpixel is absent."""
    table = torch.full((num_images, num_regions), -1, dtype=torch.long, device=labels.device)
    table[image_index.to(labels.device), region_index.to(labels.device)] = labels.long()
    return table


@torch.no_grad()
def paint_clusters(superpixels: torch.Tensor, region_labels: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """The cluster map of the whole image: per-cluster area fractions of each
    stride x stride cell (exact counts, no blending and truncating).

    Args:
        superpixels: (B, H, W) int64 labels >= 0, H and W multiples of stride.
        region_labels: (B, n) int64, n > every superpixel label: the cluster
            in [0, k) of each (image, superpixel), as ``region_label_table``
            builds it; a negative entry paints nothing (absent superpixels).
        k: the number of clusters (channels of the map).
        stride: MODEL.R2O.KMEANS.PAINT_STRIDE.

    Returns:
        (B, k, H / stride, W / stride) float32 in [0, 1]; at every cell the k
        values sum to 1 (the fraction of its pixels whose superpixel carries
        a label).
    """
    _check_labels(superpixels, "paint_clusters")
    b, height, width = superpixels.shape
    if stride < 1 or height % stride or width % stride:
        raise ValueError(
            f"paint_clusters: the superpixel map {height}x{width} (MODEL.R2O.VIEWS.WHOLE_SIZE) must be a multiple "
            f"of MODEL.R2O.KMEANS.PAINT_STRIDE ({stride})"
        )
    if region_labels.dim() != 2 or region_labels.shape[0] != b:
        raise ValueError(f"paint_clusters: region_labels must be (B={b}, n), got {tuple(region_labels.shape)}")
    device = region_labels.device
    superpixels = superpixels.to(device)
    if int(superpixels.max()) >= region_labels.shape[1]:
        raise ValueError(
            f"paint_clusters: superpixel label {int(superpixels.max())} has no entry in region_labels "
            f"of {region_labels.shape[1]} regions"
        )
    if int(region_labels.max()) >= k:
        raise ValueError(f"paint_clusters: cluster label {int(region_labels.max())} >= k = {k}")
    gh, gw = height // stride, width // stride
    cluster = torch.gather(region_labels, 1, superpixels.flatten(1))  # (B, H * W)
    cell = ((torch.arange(height, device=device) // stride)[:, None] * gw
            + (torch.arange(width, device=device) // stride)[None, :]).flatten()  # (H * W,)
    key = (torch.arange(b, device=device)[:, None] * (gh * gw) + cell[None, :]) * k + cluster
    counts = torch.bincount(key[cluster >= 0], minlength=b * gh * gw * k).view(b, gh, gw, k)
    return counts.permute(0, 3, 1, 2).to(torch.float32) / float(stride * stride)


@torch.no_grad()
def view_masks(
    cluster_maps: torch.Tensor,
    boxes: torch.Tensor,
    flips: torch.Tensor,
    whole_size: int,
    out_size: Tuple[int, int],
) -> torch.Tensor:
    """Each view's soft cluster masks on its feature grid: the whole-image map
    cropped to the view's box, resized, and flipped as the view was.

    RoIAlign with aligned=True treats a box as the continuous extent
    [x0, x1) x [y0, y1) of the pixel grid, as the view builder records it.
    sampling_ratio=0 (adaptive: ceil(bin size in map cells) samples per bin
    and axis) places one sample at every cell centre when a bin spans a whole
    number of cells, where bilinear sampling of the cell values is exact and
    the bin's mean is the exact area average; other boxes get about one
    bilinear sample per cell, an approximation of the area average (a fixed
    larger ratio would blur even the aligned case).

    Args:
        cluster_maps: (B, k, g, g) from ``paint_clusters`` (g = G / PAINT_STRIDE).
        boxes: (B, 2, 4) XYXY of each view in the G x G whole image's pixels.
        flips: (B, 2) bool, whether each view was flipped horizontally after cropping.
        whole_size: G, MODEL.R2O.VIEWS.WHOLE_SIZE.
        out_size: (h5, w5), the view's feature grid.

    Returns:
        (B, 2, k, h5, w5) float; at each cell the k values sum to 1 where the
        map's do.
    """
    b, k, gh, gw = cluster_maps.shape
    if gh != gw:
        raise ValueError(f"view_masks: the whole-image cluster map must be square, got {gh}x{gw}")
    if boxes.shape != (b, 2, 4) or tuple(flips.shape) != (b, 2):
        raise ValueError(
            f"view_masks: expected boxes (B={b}, 2, 4) and flips (B, 2), got {tuple(boxes.shape)}, {tuple(flips.shape)}"
        )
    maps = cluster_maps.float()
    rois = list(boxes.to(device=maps.device, dtype=maps.dtype).unbind(0))  # B tensors of (2, 4)
    out = roi_align(maps, rois, output_size=tuple(out_size), spatial_scale=gw / whole_size,
                    sampling_ratio=0, aligned=True)  # (B * 2, k, h5, w5), image-major
    out = out.view(b, 2, k, *out.shape[-2:])
    flips = flips.to(device=out.device, dtype=torch.bool)[:, :, None, None, None]
    return torch.where(flips, out.flip(-1), out)
