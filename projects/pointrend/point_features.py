"""Point features and point labels of boxes.

Shape legend:
    R   boxes, all images of the batch concatenated (in image order)
    P   points per box
    C   channels
    H,W height, width (of a feature map or a mask)

Box coordinates: (u, v) in [0, 1] x [0, 1] relative to a box, (x, y) order,
u = 0 at the box's left edge. Image coordinates: pixels of the (padded) input
image. The same align_corners=False convention as ``d2ext.layers.point_sample``.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence

import torch
from detectron2.structures import BitMasks, PolygonMasks

from d2ext.layers import point_sample

logger = logging.getLogger(__name__)

# Side of the box-relative rasterization of polygon ground truth (see point_labels).
POLYGON_LABEL_SIDE = 224


def regular_grid_coords(side: int, num_boxes: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Cell centres of a side x side grid, row-major: (R, side * side, 2) in [0, 1]."""
    c = (torch.arange(side, device=device, dtype=dtype) + 0.5) / side
    ys, xs = torch.meshgrid(c, c, indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    return grid.unsqueeze(0).expand(num_boxes, -1, -1)


def box_to_image_coords(boxes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Box coordinates (R, P, 2) in [0, 1] -> image pixel coordinates (R, P, 2).

    Args:
        boxes: (R, 4) XYXY in pixels.
    """
    xy0 = boxes[:, None, :2]
    wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    return xy0 + coords * wh


def sample_box_features(
    features: Sequence[torch.Tensor],
    strides: Sequence[int],
    boxes: List[torch.Tensor],
    coords: torch.Tensor,
) -> torch.Tensor:
    """Bilinear features of every feature map at box points, channels concatenated.

    Args:
        features: maps (N, C_l, H_l, W_l) of the padded batch, one per level.
        strides: the stride of each map (its pixel = stride input pixels).
        boxes: N tensors (R_i, 4), XYXY in input pixels.
        coords: (R, P, 2) box coordinates, R = sum R_i.

    Returns:
        (R, sum C_l, P).
    """
    num_per_image = [len(b) for b in boxes]
    r, p = coords.shape[:2]
    channels = sum(f.shape[1] for f in features)
    # Without autograd, one grid per box over the image's map broadcast to its n boxes
    # (a view, no copy): the same bilinear arithmetic at every point as one
    # (1, C, n * P) call, and the output is already (n, C_l, P). With autograd the map
    # is sampled once per image (the broadcast map's gradient would be n maps).
    broadcast = not (torch.is_grad_enabled() and any(f.requires_grad for f in features)) and not torch.jit.is_tracing()
    per_image, start = [], 0
    for i, (n, b) in enumerate(zip(num_per_image, boxes)):
        if n == 0:  # no box, no work
            continue
        xy = box_to_image_coords(b, coords[start : start + n])  # (n, P, 2)
        start += n
        level_feats = []
        for f, s in zip(features, strides):
            size = xy.new_tensor([f.shape[3] * s, f.shape[2] * s])
            if broadcast:
                level_feats.append(point_sample(f[i : i + 1].expand(n, -1, -1, -1), xy / size))
            else:
                flat = point_sample(f[i : i + 1], (xy / size).reshape(1, n * p, 2))  # (1, C_l, n * P)
                level_feats.append(flat.reshape(f.shape[1], n, p).transpose(0, 1))
        per_image.append(level_feats[0] if len(level_feats) == 1 else torch.cat(level_feats, dim=1))
    if not per_image:
        return coords.new_zeros(r, channels, p, dtype=features[0].dtype)
    return per_image[0] if len(per_image) == 1 else torch.cat(per_image, dim=0)


def sample_bool_masks(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of binary masks at points, without a float copy of the masks.

    Equals ``point_sample(masks[:, None].float(), coords)[:, 0]`` (zero padding
    outside), but reads only the four neighbours of each point: a float copy of
    R full-image masks would cost R * H * W * 4 bytes.

    Args:
        masks: (R, H, W), any dtype (bool for BitMasks).
        coords: (R, P, 2) in [0, 1] relative to the mask extent.

    Returns:
        (R, P) in [0, 1], dtype of ``coords``.
    """
    r, h, w = masks.shape
    flat = masks.reshape(r, h * w)
    x = coords[..., 0] * w - 0.5
    y = coords[..., 1] * h - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    out = torch.zeros_like(x)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
        weight = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
        out = out + weight * (flat.gather(1, idx).to(out.dtype) * inside)
    return out


_warned_polygons = False


def point_labels(gt_masks, boxes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Ground-truth foreground of each box's instance at the box's points.

    Args:
        gt_masks: the instances' masks, one per box: ``BitMasks`` (R, H, W) of
            the input image, or ``PolygonMasks``.
        boxes: (R, 4) XYXY in input pixels.
        coords: (R, P, 2) box coordinates.

    Returns:
        (R, P) soft labels in [0, 1] (bilinear at the point).

    ``BitMasks`` are sampled exactly at the points. ``PolygonMasks`` are
    converted: each polygon is rasterized inside its box at
    POLYGON_LABEL_SIDE^2 (detectron2's ``crop_and_resize``), then sampled, which
    costs a rasterization per box and step; ``INPUT.MASK_FORMAT: bitmask`` (as
    in the published PointRend configs) avoids it.
    """
    global _warned_polygons
    if isinstance(gt_masks, BitMasks):
        masks = gt_masks.tensor
        h, w = masks.shape[1:]
        xy = box_to_image_coords(boxes, coords) / coords.new_tensor([w, h])
        return sample_bool_masks(masks, xy)
    if isinstance(gt_masks, PolygonMasks):
        if not _warned_polygons:
            logger.warning(
                "PointRend: polygon ground truth is rasterized per box at every step; "
                "set INPUT.MASK_FORMAT: bitmask to sample the masks directly (faster)."
            )
            _warned_polygons = True
        if len(gt_masks) == 0:
            return coords.new_zeros(coords.shape[:2])
        masks = gt_masks.crop_and_resize(boxes, POLYGON_LABEL_SIDE).to(coords.device)
        return sample_bool_masks(masks, coords)
    raise TypeError(
        f"PointRend needs gt_masks as BitMasks or PolygonMasks, got {type(gt_masks).__name__}; "
        "set INPUT.MASK_FORMAT to 'bitmask' or 'polygon'."
    )


def feature_strides(input_shape: Dict, names: Sequence[str], owner_key: str) -> List[int]:
    """Strides of the named features, with an error naming the config key if one is missing."""
    missing = [n for n in names if n not in input_shape]
    if missing:
        raise ValueError(
            f"{owner_key}={list(names)} names features {missing} that the mask head does not "
            f"receive (available: {sorted(input_shape)}); they must be among "
            "MODEL.ROI_HEADS.IN_FEATURES (or use MODEL.ROI_HEADS.NAME: PointRendROIHeads)."
        )
    return [input_shape[n].stride for n in names]
