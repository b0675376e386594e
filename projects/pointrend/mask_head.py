"""PointRend mask heads for Mask R-CNN: PointRendMaskHead and ImplicitPointRendMaskHead.

Both take the image features themselves (no ROI pooler: ``ROI_MASK_HEAD.POOLER_TYPE: ""``
or ``ROI_HEADS.NAME: PointRendROIHeads``) and sample what they need at points of
each box. Shape legend:
    R   boxes of all images, concatenated in image order
    K   mask classes (1 if class-agnostic)
    S   box-feature grid side (POOLER_RESOLUTION, 14); s coarse side (7)
    P   points per box

Training (PointRendMaskHead): coarse loss on the 7 x 7 masks ("loss_mask") +
point loss ("loss_mask_point") at TRAIN_NUM_POINTS points per box chosen by
uncertainty of the coarse logits of the box's class (k, beta), labels
sampled from the ground-truth masks. Inference: the coarse mask of the
predicted class is upsampled x2 SUBDIVISION_STEPS times, each time the
SUBDIVISION_NUM_POINTS most uncertain cells are recomputed by the point head
(7 -> 224 with the defaults). Images without boxes cost nothing.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_MASK_HEAD_REGISTRY
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_loss
from detectron2.structures import Instances
from torch import nn
from torch.nn import functional as F

from d2ext.layers import (
    binary_uncertainty,
    point_sample,
    uncertain_grid_points,
    uncertain_points_with_randomness,
)

from .coarse_mask_head import CoarseMaskHead, ConvFCHead
from .point_features import feature_strides, point_labels, regular_grid_coords, sample_box_features
from .point_head import POINT_HEAD_REGISTRY, ImplicitPointHead, build_point_head

__all__ = ["PointRendMaskHead", "ImplicitPointRendMaskHead", "check_num_classes"]

logger = logging.getLogger(__name__)


def check_num_classes(cfg) -> None:
    """Build-time check that a class-specific point head predicts the detector's classes."""
    if cfg.MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK:
        return
    if cfg.MODEL.POINT_HEAD.NUM_CLASSES != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ValueError(
            f"MODEL.POINT_HEAD.NUM_CLASSES={cfg.MODEL.POINT_HEAD.NUM_CLASSES} differs from "
            f"MODEL.ROI_HEADS.NUM_CLASSES={cfg.MODEL.ROI_HEADS.NUM_CLASSES}: a class-specific point "
            "head predicts one mask per detector class. Set them equal (or set "
            "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK: True)."
        )


def _require_feature_dict(name: str, input_shape) -> None:
    if not isinstance(input_shape, dict):
        raise ValueError(
            f"{name} samples its own box features and takes the image features, not pooled ones: "
            "set MODEL.ROI_MASK_HEAD.POOLER_TYPE: '' (or MODEL.ROI_HEADS.NAME: PointRendROIHeads)."
        )


def _select(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(R, K, ...) -> (R, 1, ...): the channel of each box's class (channel 0 if K == 1)."""
    if logits.shape[1] == 1:
        return logits
    index = classes.view(-1, *([1] * (logits.dim() - 1))).expand(-1, 1, *logits.shape[2:])
    return logits.gather(1, index)


class _PointMaskHeadBase(nn.Module):
    """Box features, point features, subdivision and output assembly shared by both heads."""

    def __init__(
        self,
        *,
        box_in_features: Sequence[str],
        box_strides: Sequence[int],
        box_grid_side: int,
        point_in_features: Sequence[str],
        point_strides: Sequence[int],
        train_num_points: int,
        subdivision_steps: int,
        subdivision_num_points: int,
    ):
        super().__init__()
        self.box_in_features = list(box_in_features)
        self.box_strides = list(box_strides)
        self.box_grid_side = box_grid_side
        self.point_in_features = list(point_in_features)
        self.point_strides = list(point_strides)
        self.train_num_points = train_num_points
        self.subdivision_steps = subdivision_steps
        self.subdivision_num_points = subdivision_num_points

    @staticmethod
    def _common_config(cfg, input_shape) -> Dict:
        box_in = list(cfg.MODEL.ROI_MASK_HEAD.IN_FEATURES)
        point_in = list(cfg.MODEL.POINT_HEAD.IN_FEATURES)
        return {
            "box_in_features": box_in,
            "box_strides": feature_strides(input_shape, box_in, "MODEL.ROI_MASK_HEAD.IN_FEATURES"),
            "box_grid_side": cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
            "point_in_features": point_in,
            "point_strides": feature_strides(input_shape, point_in, "MODEL.POINT_HEAD.IN_FEATURES"),
            "train_num_points": cfg.MODEL.POINT_HEAD.TRAIN_NUM_POINTS,
            "subdivision_steps": cfg.MODEL.POINT_HEAD.SUBDIVISION_STEPS,
            "subdivision_num_points": cfg.MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS,
        }

    def _inference_features(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The maps this head samples, in channels-last memory layout (inference only).

        Bilinear sampling reads the 4 neighbours of a point in every channel: with the
        channels innermost they are 4 contiguous runs instead of 4 x C scattered reads,
        several times faster on large maps. Same values (only the layout changes).
        """
        names = set(self.box_in_features) | set(self.point_in_features)
        return {
            k: v.contiguous(memory_format=torch.channels_last) if k in names and v.dim() == 4 else v
            for k, v in features.items()
        }

    def box_features(self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor]) -> torch.Tensor:
        """(R, C, S, S): box features bilinearly sampled at the S x S grid cell centres."""
        num = sum(len(b) for b in boxes)
        side = self.box_grid_side
        ref = features[self.box_in_features[0]]
        grid = regular_grid_coords(side, num, ref.device, ref.dtype)
        feats = [features[f] for f in self.box_in_features]
        out = sample_box_features(feats, self.box_strides, boxes, grid)
        return out.reshape(num, out.shape[1], side, side)

    def point_features(
        self, features: Dict[str, torch.Tensor], boxes: List[torch.Tensor], coords: torch.Tensor
    ) -> torch.Tensor:
        """(R, C, P) fine-grained features at box coordinates (R, P, 2)."""
        feats = [features[f] for f in self.point_in_features]
        return sample_box_features(feats, self.point_strides, boxes, coords)

    def subdivide(
        self, logits: torch.Tensor, predict: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Adaptive subdivision of (R, 1, h, w) logits: SUBDIVISION_STEPS x (upsample x2,
        recompute the SUBDIVISION_NUM_POINTS most uncertain cells with ``predict``:
        (R, P, 2) box coordinates -> (R, 1, P) logits)."""
        for _ in range(self.subdivision_steps):
            logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
            r, _, h, w = logits.shape
            idx, coords = uncertain_grid_points(binary_uncertainty(logits), self.subdivision_num_points)
            values = predict(coords)
            logits = logits.reshape(r, 1, h * w).scatter(2, idx.unsqueeze(1), values).view(r, 1, h, w)
        return logits

    @staticmethod
    def _empty_output(instances: List[Instances], side: int, like: torch.Tensor) -> List[Instances]:
        for inst in instances:
            inst.pred_masks = like.new_zeros(0, 1, side, side)
        return instances

    @staticmethod
    def _attach(mask_logits: torch.Tensor, instances: List[Instances]) -> List[Instances]:
        probs = mask_logits.sigmoid().split([len(i) for i in instances])
        for prob, inst in zip(probs, instances):
            inst.pred_masks = prob  # (R_i, 1, side, side)
        return instances

    def output_side(self) -> int:
        raise NotImplementedError

    @staticmethod
    def _boxes(instances: List[Instances], training: bool) -> List[torch.Tensor]:
        return [(x.proposal_boxes if training else x.pred_boxes).tensor for x in instances]

    def point_loss(
        self, point_logits: torch.Tensor, coords: torch.Tensor, instances: List[Instances],
        boxes: List[torch.Tensor],
    ) -> torch.Tensor:
        """BCE of (R, 1, P) logits of the boxes' classes against labels from the GT masks."""
        if point_logits.shape[0] == 0:  # keeps every parameter in the graph (DDP)
            return point_logits.sum() * 0
        labels, start = [], 0
        for inst, b in zip(instances, boxes):
            n = len(b)
            if n:
                labels.append(point_labels(inst.gt_masks, b, coords[start : start + n]))
            start += n
        labels = torch.cat(labels).to(point_logits.device)
        return F.binary_cross_entropy_with_logits(point_logits[:, 0], labels, reduction="mean")


@ROI_MASK_HEAD_REGISTRY.register()
class PointRendMaskHead(_PointMaskHeadBase):
    """Coarse 7 x 7 head on point-sampled box features + point head on p2 and the coarse logits."""

    @configurable
    def __init__(
        self,
        *,
        coarse_head: CoarseMaskHead,
        point_head: nn.Module = None,
        oversample_ratio: float = 3,
        importance_sample_ratio: float = 0.75,
        **kwargs,
    ):
        """
        Args:
            coarse_head: maps (R, C, S, S) box features to (R, K, s, s) logits (``layers``).
            point_head: (R, C', P) fine features + (R, K, P) coarse logits -> (R, K', P)
                logits; None: coarse masks only (ROI_MASK_HEAD.POINT_HEAD_ON off).
            oversample_ratio, importance_sample_ratio: k and beta of training point selection.
            kwargs: of ``_PointMaskHeadBase`` (features, strides, point counts).
        """
        super().__init__(**kwargs)
        self.coarse_head = coarse_head
        self.point_head = point_head
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    @classmethod
    def from_config(cls, cfg, input_shape):
        _require_feature_dict(cls.__name__, input_shape)
        ret = cls._common_config(cfg, input_shape)
        side = ret["box_grid_side"]
        box_channels = sum(input_shape[f].channels for f in ret["box_in_features"])
        coarse = CoarseMaskHead(cfg, ShapeSpec(channels=box_channels, height=side, width=side))
        ret["coarse_head"] = coarse
        ret["oversample_ratio"] = cfg.MODEL.POINT_HEAD.OVERSAMPLE_RATIO
        ret["importance_sample_ratio"] = cfg.MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO
        if cfg.MODEL.ROI_MASK_HEAD.POINT_HEAD_ON:
            check_num_classes(cfg)
            if issubclass(POINT_HEAD_REGISTRY.get(cfg.MODEL.POINT_HEAD.NAME), ImplicitPointHead):
                raise ValueError(
                    f"MODEL.POINT_HEAD.NAME: {cfg.MODEL.POINT_HEAD.NAME} goes with "
                    "MODEL.ROI_MASK_HEAD.NAME: ImplicitPointRendMaskHead, not PointRendMaskHead."
                )
            point_channels = sum(input_shape[f].channels for f in ret["point_in_features"])
            ret["point_head"] = build_point_head(
                cfg, ShapeSpec(channels=point_channels), coarse_channels=coarse.num_classes
            )
        return ret

    def output_side(self) -> int:
        side = self.coarse_head.output_side_resolution
        return side * 2 ** self.subdivision_steps if self.point_head is not None else side

    def _predict_points(self, features, boxes, coarse_logits, classes, coords) -> torch.Tensor:
        fine = self.point_features(features, boxes, coords)
        coarse = point_sample(coarse_logits, coords)
        return _select(self.point_head(fine, coarse), classes)

    def forward(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """
        Args:
            features: image features by name, (N, C, H_l, W_l).
            instances: N Instances; training: foreground proposals (proposal_boxes,
                gt_classes, gt_masks); inference: detections (pred_boxes, pred_classes).
        Returns:
            training: {"loss_mask", "loss_mask_point"}; inference: ``instances`` with
            pred_masks (R_i, 1, side, side) probabilities.
        """
        boxes = self._boxes(instances, self.training)
        num_boxes = sum(len(b) for b in boxes)
        if not self.training and num_boxes == 0:
            return self._empty_output(instances, self.output_side(), features[self.box_in_features[0]])
        if not self.training:
            features = self._inference_features(features)
        coarse_logits = self.coarse_head.layers(self.box_features(features, boxes))  # (R, K, s, s)

        if self.training:
            losses = {"loss_mask": mask_rcnn_loss(coarse_logits, instances, self.coarse_head.vis_period)}
            if self.point_head is not None:
                classes = torch.cat([x.gt_classes for x in instances])
                with torch.no_grad():
                    coords = uncertain_points_with_randomness(
                        _select(coarse_logits, classes), binary_uncertainty, self.train_num_points,
                        self.oversample_ratio, self.importance_sample_ratio,
                    )
                point_logits = self._predict_points(features, boxes, coarse_logits, classes, coords)
                losses["loss_mask_point"] = self.point_loss(point_logits, coords, instances, boxes)
            return losses

        classes = torch.cat([x.pred_classes for x in instances])
        mask_logits = _select(coarse_logits, classes)
        if self.point_head is not None:
            mask_logits = self.subdivide(
                mask_logits,
                lambda coords: self._predict_points(features, boxes, coarse_logits, classes, coords),
            )
        return self._attach(mask_logits, instances)


@ROI_MASK_HEAD_REGISTRY.register()
class ImplicitPointRendMaskHead(_PointMaskHeadBase):
    """Implicit PointRend: a parameter head (the coarse head's architecture) predicts, per
    box, the parameters of the point MLP, which maps (fine features, position encoding)
    of a point to its mask logit. One point loss at uniform random points + an L2 penalty
    on the parameters. Inference: the MLP on a dense grid of side
    floor(sqrt(SUBDIVISION_NUM_POINTS)) (28), then subdivision (28 -> 224 with 3 steps).
    """

    @configurable
    def __init__(self, *, parameter_head: nn.Module, point_head: ImplicitPointHead,
                 params_l2_regularizer: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.parameter_head = parameter_head
        self.point_head = point_head
        self.params_l2_regularizer = params_l2_regularizer
        self.initial_side = max(1, math.isqrt(self.subdivision_num_points))

    @classmethod
    def from_config(cls, cfg, input_shape):
        _require_feature_dict(cls.__name__, input_shape)
        check_num_classes(cfg)
        ret = cls._common_config(cfg, input_shape)
        if not issubclass(POINT_HEAD_REGISTRY.get(cfg.MODEL.POINT_HEAD.NAME), ImplicitPointHead):
            raise ValueError(
                f"MODEL.ROI_MASK_HEAD.NAME: ImplicitPointRendMaskHead needs MODEL.POINT_HEAD.NAME: "
                f"ImplicitPointHead, got {cfg.MODEL.POINT_HEAD.NAME!r}."
            )
        point_channels = sum(input_shape[f].channels for f in ret["point_in_features"])
        head = build_point_head(cfg, ShapeSpec(channels=point_channels))
        box_channels = sum(input_shape[f].channels for f in ret["box_in_features"])
        side = ret["box_grid_side"]
        param_head = ConvFCHead(
            box_channels, side, cfg.MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION,
            cfg.MODEL.ROI_MASK_HEAD.CONV_DIM,
            [cfg.MODEL.ROI_MASK_HEAD.FC_DIM] * cfg.MODEL.ROI_MASK_HEAD.NUM_FC,
            head.num_params,
        )
        # Every box starts from the same well-scaled MLP: the predicted parameters are
        # a learned offset from it (small prediction weights, bias = initial MLP).
        with torch.no_grad():
            param_head.prediction.bias.copy_(head.initial_params())
        ret.update(
            parameter_head=param_head,
            point_head=head,
            params_l2_regularizer=cfg.MODEL.IMPLICIT_POINTREND.PARAMS_L2_REGULARIZER,
        )
        return ret

    def output_side(self) -> int:
        return self.initial_side * 2 ** self.subdivision_steps

    def _predict_points(self, features, boxes, params, classes, coords) -> torch.Tensor:
        fine = None
        if self.point_head.image_feature_enabled:
            fine = self.point_features(features, boxes, coords)
        return _select(self.point_head(fine, coords, params), classes)

    def forward(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """Same contract as PointRendMaskHead; losses "loss_mask_point", "loss_l2" (detectron2's names)."""
        boxes = self._boxes(instances, self.training)
        num_boxes = sum(len(b) for b in boxes)
        ref = features[self.box_in_features[0]]
        if not self.training and num_boxes == 0:
            return self._empty_output(instances, self.output_side(), ref)
        if not self.training:
            features = self._inference_features(features)
        params = self.parameter_head(self.box_features(features, boxes))  # (R, num_params)

        if self.training:
            classes = torch.cat([x.gt_classes for x in instances])
            coords = torch.rand(num_boxes, self.train_num_points, 2, device=ref.device, dtype=ref.dtype)
            point_logits = self._predict_points(features, boxes, params, classes, coords)
            # detectron2's penalty: the mean over every predicted parameter of every box
            l2 = (params ** 2).mean() if num_boxes else params.sum() * 0
            return {
                "loss_mask_point": self.point_loss(point_logits, coords, instances, boxes),
                "loss_l2": self.params_l2_regularizer * l2,
            }

        classes = torch.cat([x.pred_classes for x in instances])
        side = self.initial_side

        def predict(coords):
            return self._predict_points(features, boxes, params, classes, coords)

        grid = regular_grid_coords(side, num_boxes, ref.device, ref.dtype)
        mask_logits = predict(grid).reshape(num_boxes, 1, side, side)
        return self._attach(self.subdivide(mask_logits, predict), instances)
