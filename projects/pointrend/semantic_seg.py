"""PointRendSemSegHead: a coarse semantic head (Semantic FPN) refined by a point head.

Shape legend:
    N   images; K classes; H, W padded input size; h, w coarse size (H / COMMON_STRIDE)
    P   points per image; C fine-grained channels

Training: the coarse head's cross-entropy ("loss_sem_seg") + cross-entropy of the
point head at TRAIN_NUM_POINTS points per image ("loss_sem_seg_point"), chosen
with k = OVERSAMPLE_RATIO, beta = IMPORTANCE_SAMPLE_RATIO by the margin between
the top two coarse logits; labels are the ground truth at the pixel holding
each point; IGNORE_VALUE is ignored. Inference: SUBDIVISION_STEPS times,
upsample x2 (capped at the input size) and recompute the
SUBDIVISION_NUM_POINTS cells with the smallest top-two margin; the result is
brought to the input size, as SemanticSegmentor's postprocessing expects.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.nn import functional as F

from d2ext.layers import (
    masked_cross_entropy,
    margin_uncertainty,
    point_sample,
    uncertain_grid_points,
    uncertain_points_with_randomness,
)

from .point_head import ImplicitPointHead, build_point_head

__all__ = ["PointRendSemSegHead", "point_sample_labels"]


def point_sample_labels(labels: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Labels (N, H, W) at points (N, P, 2) in [0, 1]: the value of the pixel holding each point."""
    n, h, w = labels.shape
    x = (coords[..., 0] * w).long().clamp_(0, w - 1)
    y = (coords[..., 1] * h).long().clamp_(0, h - 1)
    return labels.reshape(n, h * w).gather(1, y * w + x)


@SEM_SEG_HEADS_REGISTRY.register()
class PointRendSemSegHead(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        coarse_head: nn.Module,
        point_head: nn.Module,
        in_features: Sequence[str],
        ignore_value: int,
        common_stride: int,
        loss_weight: float = 1.0,
        train_num_points: int = 2048,
        oversample_ratio: float = 3,
        importance_sample_ratio: float = 0.75,
        subdivision_steps: int = 2,
        subdivision_num_points: int = 8192,
    ):
        """
        Args:
            coarse_head: a semantic head with ``layers(features) -> (N, K, h, w)`` logits.
            point_head: (N, C, P) fine features + (N, K, P) coarse logits -> (N, K, P).
            in_features: fine-grained features of the point head (POINT_HEAD.IN_FEATURES).
            common_stride: input pixels per coarse cell.
            loss_weight: of the coarse loss (SEM_SEG_HEAD.LOSS_WEIGHT).
        """
        super().__init__()
        # detectron2's attribute name, so that its checkpoints load as they are.
        self.coarse_sem_seg_head = coarse_head
        self.point_head = point_head
        self.in_features = list(in_features)
        self.ignore_value = ignore_value
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        if cfg.MODEL.POINT_HEAD.NUM_CLASSES != num_classes:
            raise ValueError(
                f"MODEL.POINT_HEAD.NUM_CLASSES={cfg.MODEL.POINT_HEAD.NUM_CLASSES} differs from "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={num_classes}: the point head refines the coarse "
                "head's classes. Set them equal."
            )
        in_features = list(cfg.MODEL.POINT_HEAD.IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.POINT_HEAD.IN_FEATURES={in_features}: {missing} not among the backbone's "
                f"outputs {sorted(input_shape)}."
            )
        coarse_name = cfg.MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME
        if coarse_name == "PointRendSemSegHead":
            raise ValueError("MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME cannot be PointRendSemSegHead itself")
        coarse_head = SEM_SEG_HEADS_REGISTRY.get(coarse_name)(cfg, input_shape)
        if not hasattr(coarse_head, "layers"):
            raise ValueError(
                f"MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME={coarse_name!r} has no layers(features) "
                "returning its logits before upsampling; PointRend needs one."
            )
        channels = sum(input_shape[f].channels for f in in_features)
        point_head = build_point_head(
            cfg, ShapeSpec(channels=channels), coarse_channels=num_classes, num_classes=num_classes
        )
        if isinstance(point_head, ImplicitPointHead):
            raise ValueError("MODEL.POINT_HEAD.NAME: ImplicitPointHead is for instance masks only")
        return {
            "coarse_head": coarse_head,
            "point_head": point_head,
            "in_features": in_features,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "common_stride": cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE,
            "loss_weight": cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            "train_num_points": cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS,
            "oversample_ratio": cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO,
            "importance_sample_ratio": cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO,
            "subdivision_steps": cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS,
            "subdivision_num_points": cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS,
        }

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoint upgrade: d2ext's earlier name coarse_head -> coarse_sem_seg_head.
        old = prefix + "coarse_head."
        for key in list(state_dict.keys()):
            if key.startswith(old):
                state_dict[prefix + "coarse_sem_seg_head." + key[len(old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _predict_points(self, features, coarse_logits, coords) -> torch.Tensor:
        fine = torch.cat([point_sample(features[f], coords) for f in self.in_features], dim=1)
        return self.point_head(fine, point_sample(coarse_logits, coords))

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        """
        Args:
            features: backbone features by name.
            targets: (N, H, W) long labels of the padded batch (training).
        Returns:
            training: (None, {"loss_sem_seg", "loss_sem_seg_point"});
            inference: ((N, K, H, W) logits, {}).
        """
        coarse_logits = self.coarse_sem_seg_head.layers(features)  # (N, K, h, w)
        if self.training:
            return None, self.losses(features, coarse_logits, targets)

        n, k, h, w = coarse_logits.shape
        out_h, out_w = h * self.common_stride, w * self.common_stride
        logits = coarse_logits
        for _ in range(self.subdivision_steps):
            size = (min(2 * logits.shape[2], out_h), min(2 * logits.shape[3], out_w))
            if size == tuple(logits.shape[2:]):
                break
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            idx, coords = uncertain_grid_points(margin_uncertainty(logits), self.subdivision_num_points)
            values = self._predict_points(features, coarse_logits, coords)  # (N, K, P)
            hw = size[0] * size[1]
            logits = logits.reshape(n, k, hw).scatter(2, idx.unsqueeze(1).expand(-1, k, -1), values)
            logits = logits.view(n, k, *size)
        if tuple(logits.shape[2:]) != (out_h, out_w):
            logits = F.interpolate(logits, size=(out_h, out_w), mode="bilinear", align_corners=False)
        return logits, {}

    def losses(self, features, coarse_logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        upsampled = F.interpolate(
            coarse_logits, scale_factor=self.common_stride, mode="bilinear", align_corners=False
        )
        coarse_loss = masked_cross_entropy(upsampled, targets, self.ignore_value)
        losses = {"loss_sem_seg": coarse_loss * self.loss_weight}
        with torch.no_grad():
            coords = uncertain_points_with_randomness(
                coarse_logits, margin_uncertainty, self.train_num_points,
                self.oversample_ratio, self.importance_sample_ratio,
            )
        point_logits = self._predict_points(features, coarse_logits, coords)
        labels = point_sample_labels(targets, coords)
        losses["loss_sem_seg_point"] = masked_cross_entropy(point_logits, labels, self.ignore_value)
        return losses
