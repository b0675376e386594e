"""AdaptIS meta-architecture (``MODEL.META_ARCHITECTURE: "AdaptIS"``).

backbone -> FeatureFusion (one map F at COMMON_STRIDE) -> semantic head,
proposal head (on detached F), and instance-selection head (points -> masks)
on F upsampled by HEAD_UPSAMPLE. Training: stage 1 (masks + semantics) or stage 2 (proposals only,
the rest frozen and in eval mode), ``MODEL.ADAPTIS.TRAIN.STAGE``. Inference:
proposals -> greedy assembly -> panoptic / instances / sem_seg; or, with
``"points"`` in an input dict, one mask per point (click-to-segment).

Shapes: B images, (Hp, Wp) the padded batch, (h_i, w_i) image i inside it,
(H, W) its original size, (h, w) the head's map, K points per image.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import ImageList, Instances
from d2ext.engine import Expectation, expect_count
from torch import nn

from .assembly import AssemblyResult, greedy_assembly
from .heads import ConvHead, Controller, FeatureFusion, HeadState, InstanceSelectionHead
from .inference import ImageContext
from .layers import sample_at_points
from .losses import normalized_sigmoid_focal_loss, normalized_softmax_focal_loss, proposal_loss
from .proposal_targets import adaptive_threshold_step, proposal_labels
from .sampling import sample_training_points

__all__ = ["AdaptIS", "class_count_expectations", "dataset_classes"]

logger = logging.getLogger(__name__)


def dataset_classes(cfg) -> Optional[dict]:
    """{"num_classes", "thing_ids", "ignore_label", "name"} of the first configured
    train (else test) dataset that is registered; None if there is none."""
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in MetadataCatalog.list():
            continue
        meta = MetadataCatalog.get(name)
        classes = meta.get("stuff_classes") or meta.get("thing_classes")
        things = meta.get("thing_dataset_id_to_contiguous_id")
        if classes is None or things is None:
            continue
        return {
            "num_classes": len(classes),
            "thing_ids": sorted(things.values()),
            "ignore_label": meta.get("ignore_label", 255),
            "name": name,
        }
    return None


def class_count_expectations(cfg, meta) -> List[Expectation]:
    """MODEL.ADAPTIS.NUM_CLASSES vs every class of a panoptic dataset, for d2ext's
    consistency check. No ignore key to compare: the model takes the metadata's."""
    return expect_count(
        "MODEL.ADAPTIS.NUM_CLASSES",
        cfg.MODEL.ADAPTIS.NUM_CLASSES,
        meta,
        ("stuff_classes", "thing_classes"),
        "AdaptIS's semantic head predicts every class, things and stuff (a non-separated panoptic dataset)",
    )


@META_ARCH_REGISTRY.register()
class AdaptIS(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        fusion: FeatureFusion,
        instance_head: InstanceSelectionHead,
        sem_head: ConvHead,
        proposal_head: ConvHead,
        thing_ids: Sequence[int],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        common_stride: int = 4,
        head_upsample: int = 1,
        size_divisibility: int = -1,
        ignore_label: int = 255,
        stage: int = 1,
        num_points: int = 12,
        min_object_area: int = 0,
        mask_weight: float = 1.0,
        mask_alpha: float = 0.5,
        mask_gamma: float = 2.0,
        sem_weight: float = 0.75,
        sem_gamma: float = 1.0,
        proposal_weight: float = 1.0,
        iou_thresh_init: float = 0.35,
        iou_thresh_step: float = 0.025,
        iou_thresh_momentum: float = 0.99,
        bad_percentile: float = 30.0,
        test: Optional[dict] = None,
    ):
        """
        Args:
            backbone, fusion, instance_head, sem_head, proposal_head: the parts.
            thing_ids: contiguous ids of the thing classes (the semantic head
                predicts every class; things are where points and instances live).
            common_stride, head_upsample: F is at common_stride / head_upsample.
            size_divisibility: pad the batch to a multiple of this (< 0: the backbone's).
            stage: 1 or 2 (see the module docstring).
            num_points: K training points per image.
            min_object_area: things smaller than this get no training points.
            mask_*, sem_*, proposal_weight: the losses (``losses.py``).
            iou_thresh_*, bad_percentile: stage-2 targets (``proposal_targets.py``).
            test: inference settings, the keys of ``MODEL.ADAPTIS.TEST`` in lower case.
        """
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"MODEL.ADAPTIS.TRAIN.STAGE={stage}: expected 1 or 2")
        if head_upsample not in (1, 2, 4) or common_stride % head_upsample:
            raise ValueError(
                f"MODEL.ADAPTIS.HEAD_UPSAMPLE={head_upsample}: expected 1, 2 or 4, dividing "
                f"MODEL.ADAPTIS.COMMON_STRIDE={common_stride}"
            )
        self.backbone = backbone
        self.fusion = fusion
        self.instance_head = instance_head
        self.sem_head = sem_head
        self.proposal_head = proposal_head
        self.common_stride = common_stride
        self.head_stride = common_stride // head_upsample
        self.head_upsample = head_upsample
        self.size_divisibility = backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        self.ignore_label = ignore_label
        self.stage = stage
        self.num_points = num_points
        self.min_object_area = min_object_area
        self.mask_weight, self.mask_alpha, self.mask_gamma = mask_weight, mask_alpha, mask_gamma
        self.sem_weight, self.sem_gamma = sem_weight, sem_gamma
        self.proposal_weight = proposal_weight
        self.iou_thresh_step, self.iou_thresh_momentum = iou_thresh_step, iou_thresh_momentum
        self.bad_percentile = bad_percentile
        self.test_cfg = dict(test or {})
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.register_buffer("thing_ids", torch.tensor(list(thing_ids), dtype=torch.int64), False)
        # Stage 2's adaptive binarisation threshold: a persistent buffer, so it is
        # in every checkpoint and survives --resume.
        self.register_buffer("iou_thresh", torch.tensor(float(iou_thresh_init)))

        # What trains: stage 1 everything but the proposal head (it has no loss
        # yet, and data-parallel training wants every trainable parameter used);
        # stage 2 the proposal head alone.
        for name, child in self.named_children():
            trainable = (name == "proposal_head") == (stage == 2)
            for p in child.parameters():
                p.requires_grad_(trainable)

    @classmethod
    def from_config(cls, cfg) -> dict:
        a = cfg.MODEL.ADAPTIS
        found = dataset_classes(cfg)
        if found is None:
            raise ValueError(
                "AdaptIS needs a registered panoptic dataset in DATASETS.TRAIN or DATASETS.TEST "
                "(its metadata stuff_classes and thing_dataset_id_to_contiguous_id give the classes "
                f"and which are things); got TRAIN={tuple(cfg.DATASETS.TRAIN)}, TEST={tuple(cfg.DATASETS.TEST)}"
            )
        if found["num_classes"] != a.NUM_CLASSES:
            raise ValueError(
                f"MODEL.ADAPTIS.NUM_CLASSES={a.NUM_CLASSES} disagrees with dataset {found['name']!r}, "
                f"which has {found['num_classes']} classes: set MODEL.ADAPTIS.NUM_CLASSES={found['num_classes']}"
            )
        backbone = build_backbone(cfg)
        fusion = FeatureFusion(backbone.output_shape(), a.IN_FEATURES, a.COMMON_STRIDE, a.FUSE_DIM, a.FUSE_NORM)
        controller = Controller(
            a.CONTROLLER.NAME, a.FUSE_DIM, a.CONTROLLER.DIM, a.CONTROLLER.NUM_LAYERS, a.HEAD_NORM
        )
        ih = a.INSTANCE_HEAD
        instance_head = InstanceSelectionHead(
            a.FUSE_DIM,
            channels=ih.CHANNELS,
            num_convs_before=ih.NUM_CONVS_BEFORE,
            num_convs_after=ih.NUM_CONVS_AFTER,
            controller=controller,
            norm_radius=a.NORM_RADIUS,
            norm=a.HEAD_NORM,
            output_scale=ih.OUTPUT_SCALE,
            output_bias=ih.OUTPUT_BIAS,
        )
        t = a.TEST
        return {
            "backbone": backbone,
            "fusion": fusion,
            "instance_head": instance_head,
            "sem_head": ConvHead(a.FUSE_DIM, a.NUM_CLASSES, a.SEM_HEAD_CONVS, a.HEAD_NORM),
            "proposal_head": ConvHead(a.FUSE_DIM, 1, a.PROPOSAL_HEAD_CONVS, a.HEAD_NORM),
            "thing_ids": found["thing_ids"],
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "common_stride": a.COMMON_STRIDE,
            "head_upsample": a.HEAD_UPSAMPLE,
            "size_divisibility": a.SIZE_DIVISIBILITY,
            "ignore_label": found["ignore_label"],
            "stage": a.TRAIN.STAGE,
            "num_points": a.TRAIN.NUM_POINTS,
            "min_object_area": a.TRAIN.MIN_OBJECT_AREA,
            "mask_weight": a.LOSS.MASK_WEIGHT,
            "mask_alpha": a.LOSS.MASK_ALPHA,
            "mask_gamma": a.LOSS.MASK_GAMMA,
            "sem_weight": a.LOSS.SEM_WEIGHT,
            "sem_gamma": a.LOSS.SEM_GAMMA,
            "proposal_weight": a.LOSS.PROPOSAL_WEIGHT,
            "iou_thresh_init": a.TRAIN.IOU_THRESH_INIT,
            "iou_thresh_step": a.TRAIN.IOU_THRESH_STEP,
            "iou_thresh_momentum": a.TRAIN.IOU_THRESH_MOMENTUM,
            "bad_percentile": a.TRAIN.BAD_PERCENTILE,
            "test": {k.lower(): v for k, v in t.items()},
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def train(self, mode: bool = True) -> "AdaptIS":
        """Stage 2 keeps every frozen part in eval mode: its batch norms neither
        update their statistics nor normalise with batch statistics."""
        super().train(mode)
        if self.stage == 2:
            for name, child in self.named_children():
                if name != "proposal_head":
                    child.eval()
        return self

    # ------------------------------------------------------------------ shared
    def preprocess(self, batched_inputs: List[dict]) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def fused_features(self, images: ImageList) -> torch.Tensor:
        """(B, 3, Hp, Wp) -> F (B, C, Hp / s, Wp / s), s = COMMON_STRIDE: the semantic
        and proposal heads' input."""
        return self.fusion(self.backbone(images.tensor))

    def instance_features(self, fused: torch.Tensor) -> torch.Tensor:
        """F upsampled by HEAD_UPSAMPLE: the instance head's input, at ``self.head_stride``.
        Only this head runs at the finer stride, the one that must cut thin objects."""
        if self.head_upsample == 1:
            return fused
        return F.interpolate(fused, scale_factor=self.head_upsample, mode="bilinear", align_corners=False)

    def _to_input(self, maps: torch.Tensor, padded_hw) -> torch.Tensor:
        """(N, C, h, w) head maps -> (N, C, Hp, Wp) bilinear."""
        if tuple(maps.shape[-2:]) == tuple(padded_hw):
            return maps
        return F.interpolate(maps, size=padded_hw, mode="bilinear", align_corners=False)

    def forward(self, batched_inputs: List[dict]):
        """
        Args:
            batched_inputs: the common mapper's dicts: "image" (3, h, w); in
                training "segments" (Instances: gt_classes (T,), gt_masks (T, h, w)
                bool) and "sem_seg" ((h, w) int64); at inference "height",
                "width" (optional), "points" (optional, (N, 2) xy in the image's
                pixels: click-to-segment) and "candidates" (optional, (N, 2):
                the assembly's candidates in this order instead of the proposals').

        Returns:
            training: dict of weighted losses. Inference: one dict per image,
            "panoptic_seg", "instances" and "sem_seg"; or "instances" with one
            mask per point when the dict has "points".
        """
        images = self.preprocess(batched_inputs)
        if not self.training:
            return self.inference(batched_inputs, images)
        if self.stage == 1:
            return self.stage1_losses(batched_inputs, images)
        return self.stage2_losses(batched_inputs, images)

    # ------------------------------------------------------------------ training
    def _targets(self, batched_inputs: List[dict], images: ImageList):
        """-> per image (T_i, Hp, Wp) bool thing masks, (B, Hp, Wp) labels, (B, Hp, Wp) valid."""
        hp, wp = images.tensor.shape[-2:]
        b = len(batched_inputs)
        labels = torch.full((b, hp, wp), self.ignore_label, dtype=torch.int64, device=self.device)
        valid = torch.zeros((b, hp, wp), dtype=torch.bool, device=self.device)
        things = []
        for i, x in enumerate(batched_inputs):
            for key in ("segments", "sem_seg"):
                if key not in x:
                    raise KeyError(
                        f"AdaptIS training needs the {key!r} target in every input dict (got keys "
                        f"{sorted(x)}); the common mapper builds it for a panoptic dataset"
                    )
            h, w = images.image_sizes[i]
            valid[i, :h, :w] = True
            sem = x["sem_seg"].to(self.device)
            labels[i, : sem.shape[0], : sem.shape[1]] = sem
            seg = x["segments"]
            masks = seg.gt_masks.tensor if hasattr(seg.gt_masks, "tensor") else seg.gt_masks
            masks = masks.to(self.device)
            keep = torch.isin(seg.gt_classes.to(self.device), self.thing_ids)
            keep &= masks.flatten(1).sum(dim=1) >= max(self.min_object_area, 1)
            padded = torch.zeros((int(keep.sum()), hp, wp), dtype=torch.bool, device=self.device)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks[keep]
            things.append(padded)
        return things, labels, valid

    def stage1_losses(self, batched_inputs: List[dict], images: ImageList) -> Dict[str, torch.Tensor]:
        things, labels, valid = self._targets(batched_inputs, images)
        hp, wp = labels.shape[-2:]
        fused = self.fused_features(images)
        pt = sample_training_points(things, self.num_points, False, images.image_sizes)
        logits = self.instance_head(self.instance_features(fused), self.head_stride, pt.points, pt.batch_index)
        logits = self._to_input(logits, (hp, wp))[:, 0]
        per_point = normalized_sigmoid_focal_loss(
            logits, pt.masks, valid[pt.batch_index], self.mask_alpha, self.mask_gamma
        )
        weights = pt.weights.to(per_point.dtype)
        loss_mask = (per_point * weights).sum() / weights.sum().clamp(min=1)
        sem_logits = self._to_input(self.sem_head(fused), (hp, wp))
        loss_sem = normalized_softmax_focal_loss(sem_logits, labels, self.ignore_label, self.sem_gamma).mean()
        return {"loss_mask": self.mask_weight * loss_mask, "loss_sem_seg": self.sem_weight * loss_sem}

    def stage2_losses(self, batched_inputs: List[dict], images: ImageList) -> Dict[str, torch.Tensor]:
        things, _, valid = self._targets(batched_inputs, images)
        b, (hp, wp), k = len(batched_inputs), valid.shape[-2:], self.num_points
        with torch.no_grad():  # everything but the proposal head is frozen
            fused = self.fused_features(images)
            pt = sample_training_points(things, k, True, images.image_sizes)
            logits = self.instance_head(self.instance_features(fused), self.head_stride, pt.points, pt.batch_index)
            probs = torch.sigmoid(self._to_input(logits, (hp, wp))[:, 0])
            used = pt.weights
            thresh = adaptive_threshold_step(
                probs[used], pt.masks[used], valid[pt.batch_index[used]], float(self.iou_thresh),
                self.iou_thresh_step, self.iou_thresh_momentum,
            )
            self.iou_thresh.fill_(thresh)
            labels = proposal_labels(
                probs.view(b, k, hp, wp), pt.masks.view(b, k, hp, wp), valid[:, None], thresh, self.bad_percentile
            )
            labels = torch.where(used.view(b, k), labels, torch.full_like(labels, -1.0))
        proposal_map = self.proposal_head(fused.detach())  # (B, 1, h, w)
        at_points = sample_at_points(proposal_map, pt.points, pt.batch_index, self.common_stride)[:, 0]
        return {"loss_proposals": self.proposal_weight * proposal_loss(at_points.view(b, k), labels)}

    # ------------------------------------------------------------------ inference
    def image_contexts(self, batched_inputs: List[dict], images: ImageList) -> List[ImageContext]:
        """One :class:`ImageContext` per image: everything computed once per image."""
        fused = self.fused_features(images)
        sem_logits = self.sem_head(fused)
        proposal_logits = self.proposal_head(fused)
        state = self.instance_head.prepare(self.instance_features(fused), self.head_stride)
        padded_hw = tuple(images.tensor.shape[-2:])
        contexts = []
        for i, x in enumerate(batched_inputs):
            h, w = images.image_sizes[i]
            one = HeadState(state.first_conv[i : i + 1], state.controller_map[i : i + 1], state.stride)
            sem_prob = F.softmax(self._to_input(sem_logits[i : i + 1], padded_hw), dim=1)[0]
            contexts.append(
                ImageContext(
                    head=self.instance_head,
                    state=one,
                    image_hw=(h, w),
                    padded_hw=padded_hw,
                    out_hw=(x.get("height", h), x.get("width", w)),
                    sem_prob=sem_prob,
                    proposal_logits=self._to_input(proposal_logits[i : i + 1], padded_hw)[0, 0, :h, :w],
                    thing_ids=self.thing_ids,
                )
            )
        return contexts

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict], images: ImageList) -> List[dict]:
        t = self.test_cfg
        results = []
        for x, ctx in zip(batched_inputs, self.image_contexts(batched_inputs, images)):
            if x.get("points") is not None:
                results.append({"instances": ctx.clicks(x["points"].to(self.device), t["mask_thresh"], t["chunk_size"])})
                continue
            candidates = x.get("candidates")
            if candidates is None:
                candidates = ctx.candidates(
                    power=t["proposal_power"], thing_thresh=t["thing_prob_thresh"], blur=t["proposal_blur"],
                    thresh=t["proposal_thresh"], kernel=t["local_max_kernel"], limit=t["max_iters"],
                    mode=t["candidates"], seed=t["random_seed"],
                )
            else:
                candidates = torch.as_tensor(candidates, dtype=torch.float32, device=self.device)[: t["max_iters"]]
            assembly = self.assemble(ctx, candidates)
            results.append(ctx.outputs(assembly, t["mask_thresh"], t["stuff_prob_mult"]))
        return results

    def assemble(self, ctx: ImageContext, candidates: torch.Tensor, chunk_size: Optional[int] = None) -> AssemblyResult:
        """Greedy assembly of one image's (n, 2) candidates (TEST.CHUNK_SIZE unless given)."""
        t = self.test_cfg
        return greedy_assembly(
            candidates,
            ctx.predict,
            ctx.image_hw,
            mask_thresh=t["mask_thresh"],
            overlap_thresh=t["overlap_thresh"],
            min_area=t["min_area"],
            chunk_size=t["chunk_size"] if chunk_size is None else chunk_size,
        )

    @torch.no_grad()
    def predict_from_points(
        self, image: torch.Tensor, points, height: Optional[int] = None, width: Optional[int] = None
    ) -> Instances:
        """Click-to-segment: one mask per point.

        Args:
            image: (3, h, w) as the model takes it (INPUT.FORMAT, resized).
            points: (N, 2) xy in that image's pixels.
            height, width: output size (default: the image's).

        Returns:
            Instances at (height, width): pred_masks (N, H, W) bool, mask_probs
            (N, H, W), scores (N,), pred_classes (N,), pred_boxes.
        """
        was_training = self.training
        self.eval()
        try:
            x = {"image": image, "points": torch.as_tensor(points, dtype=torch.float32).reshape(-1, 2)}
            if height is not None:
                x["height"], x["width"] = height, width
            return self([x])[0]["instances"]
        finally:
            self.train(was_training)
