"""MaskFormer meta-architecture (``MODEL.META_ARCHITECTURE: "MaskFormer"``).

backbone -> MaskFormerHead (pixel decoder + transformer predictor) ->
training: SetCriterion losses; inference: semantic / panoptic / instance
outputs in detectron2's format at the original image size, as
``MODEL.MASK_FORMER.TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON`` ask.

Shapes: B images, Q queries, K classes, (Hp, Wp) padded batch size,
(h, w) an image's size inside the batch, (H, W) its original size.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone, build_sem_seg_head
from d2ext.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks, ImageList, PolygonMasks
from d2ext.engine import Expectation, expect_count
from torch import nn

from .config import DATASET_MAPPER_TARGETS
from .criterion import SetCriterion
from .inference import (
    instance_inference,
    panoptic_inference,
    semantic_inference,
    upsampled_semantic_inference,
)
from .matcher import HungarianMatcher
from .tta import semantic_tta

__all__ = ["MaskFormer", "check_num_classes", "class_count_expectations", "dataset_num_classes"]


def class_fields(cfg) -> Tuple[str, ...]:
    """Metadata fields that hold the classes MaskFormer predicts, first found wins.

    Semantic and (non-separated) panoptic datasets list every class in
    ``stuff_classes``; instance-only datasets list theirs in ``thing_classes``,
    which is also what the instance mappers train on (a Cityscapes instance
    dataset has both: 8 things of 19 classes).
    """
    if "instances" in DATASET_MAPPER_TARGETS.get(cfg.INPUT.DATASET_MAPPER_NAME, ()):
        return ("thing_classes",)
    return ("stuff_classes", "thing_classes")


def dataset_num_classes(
    dataset_name: str, fields: Tuple[str, ...] = ("stuff_classes", "thing_classes")
) -> Optional[Tuple[int, str]]:
    """(number of classes, metadata field) of a registered dataset, or None if unknown;
    ``fields``: see :func:`class_fields`."""
    if dataset_name not in MetadataCatalog.list():
        return None  # not registered: nothing to check (and nothing to create)
    meta = MetadataCatalog.get(dataset_name)
    for field in fields:
        classes = meta.get(field)
        if classes is not None:
            return len(classes), field
    return None


def check_num_classes(cfg) -> None:
    """Raises ValueError unless SEM_SEG_HEAD.NUM_CLASSES equals every configured dataset's classes."""
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for key in ("DATASETS.TRAIN", "DATASETS.TEST"):
        for name in cfg.DATASETS[key.split(".")[1]]:
            found = dataset_num_classes(name, class_fields(cfg))
            if found is not None and found[0] != k:
                n, field = found
                raise ValueError(
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={k} disagrees with {key}: dataset {name!r} "
                    f"has {n} classes (its metadata {field}). MaskFormer predicts "
                    f"NUM_CLASSES + 1 logits (the last is 'no object'): set "
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={n}, or use another dataset."
                )


def class_count_expectations(cfg, meta) -> List[Expectation]:
    """SEM_SEG_HEAD.NUM_CLASSES vs the dataset's classes, for d2ext's consistency check
    (before the model is built). The head's IGNORE_VALUE is not compared: MaskFormer
    takes the ignore label from the metadata (the mapper drops it from the segments)."""
    return expect_count(
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        meta,
        class_fields(cfg),
        "MaskFormer's NUM_CLASSES excludes the 'no object' class (it predicts NUM_CLASSES + 1 logits)",
    )


def _thing_ids(cfg) -> Optional[List[int]]:
    """Contiguous ids of the thing classes of the first train (else test) dataset."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    if not names or names[0] not in MetadataCatalog.list():
        return None
    mapping = MetadataCatalog.get(names[0]).get("thing_dataset_id_to_contiguous_id")
    return sorted(mapping.values()) if mapping else None


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: SetCriterion,
        num_queries: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        semantic_on: bool = True,
        panoptic_on: bool = False,
        instance_on: bool = False,
        object_mask_threshold: float = 0.0,
        overlap_threshold: float = 0.0,
        thing_ids: Optional[Sequence[int]] = None,
        sem_seg_postprocess_before_inference: bool = False,
        test_topk_per_image: int = 100,
        tta: Optional[dict] = None,
        panoptic_mask_on_pixels_only: bool = False,
        instance_things_after_topk: bool = False,
    ):
        """
        Args:
            backbone, sem_seg_head: features, then MaskFormerHead's predictions.
            criterion: the training loss.
            num_queries: Q.
            size_divisibility: pad the batch to a multiple of this; < 0: the
                backbone's size_divisibility.
            semantic_on / panoptic_on / instance_on: outputs of inference.
            object_mask_threshold, overlap_threshold: panoptic inference (see
                ``inference.panoptic_inference``).
            thing_ids: contiguous ids of thing classes (panoptic "isthing",
                instance classes); None: none are things for panoptic, all
                classes may be instances.
            sem_seg_postprocess_before_inference: resize masks to the output size
                before combining them into semantic scores (always the case
                when panoptic or instance outputs are on, which need them resized).
            test_topk_per_image: instances per image.
            panoptic_mask_on_pixels_only: Mask2Former's panoptic merge rule
                (``inference.panoptic_inference``); from_config sets it for
                Mask2Former's decoder, as its official code applies it.
            instance_things_after_topk: Mask2Former's instance selection (all
                classes compete for the top k, then stuff is dropped;
                ``inference.instance_inference``); set with the same rule.
            tta: semantic test-time augmentation, {"min_sizes", "max_size",
                "flip"}; None: off.
        """
        super().__init__()
        if not (semantic_on or panoptic_on or instance_on):
            raise ValueError(
                "MODEL.MASK_FORMER.TEST: at least one of SEMANTIC_ON, PANOPTIC_ON, INSTANCE_ON must be True"
            )
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        if size_divisibility < 0:
            size_divisibility = backbone.size_divisibility
        self.size_divisibility = size_divisibility
        self.semantic_on = semantic_on
        self.panoptic_on = panoptic_on
        self.instance_on = instance_on
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.panoptic_mask_on_pixels_only = panoptic_mask_on_pixels_only
        self.instance_things_after_topk = instance_things_after_topk
        self.sem_seg_postprocess_before_inference = (
            sem_seg_postprocess_before_inference or panoptic_on or instance_on
        )
        self.test_topk_per_image = test_topk_per_image
        self.tta = tta
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        ids = None if thing_ids is None else torch.tensor(list(thing_ids), dtype=torch.int64)
        self.register_buffer("thing_ids", ids, False)

    @classmethod
    def from_config(cls, cfg) -> dict:
        mf = cfg.MODEL.MASK_FORMER
        check_num_classes(cfg)
        mapper = cfg.INPUT.DATASET_MAPPER_NAME
        if mapper not in DATASET_MAPPER_TARGETS:
            raise ValueError(
                f"INPUT.DATASET_MAPPER_NAME={mapper!r} is not one MaskFormer knows: "
                f"{sorted(DATASET_MAPPER_TARGETS)}"
            )
        if mf.TEST.SEMANTIC_INFERENCE_METHOD != "probabilistic":
            raise ValueError(
                f"MODEL.MASK_FORMER.TEST.SEMANTIC_INFERENCE_METHOD={mf.TEST.SEMANTIC_INFERENCE_METHOD!r}: "
                "only 'probabilistic' is implemented"
            )
        backbone = build_backbone(cfg)
        # Mask2Former's decoder brings Mask2Former's rules, for which neither official
        # code base has a key: its mask loss and cost (sigmoid binary cross-entropy,
        # MaskFormer's focal), panoptic merge and instance selection.
        mask2former = mf.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder"
        mask_loss = "bce" if mask2former else "focal"
        matcher = HungarianMatcher(
            cost_class=mf.CLASS_WEIGHT,
            cost_mask=mf.MASK_WEIGHT,
            cost_dice=mf.DICE_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
            mask_loss=mask_loss,
        )
        criterion = SetCriterion(
            cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            matcher,
            class_weight=mf.CLASS_WEIGHT,
            mask_weight=mf.MASK_WEIGHT,
            dice_weight=mf.DICE_WEIGHT,
            eos_coef=mf.NO_OBJECT_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
            at_target_resolution=mf.MASK_LOSS_AT_TARGET_RESOLUTION,
            mask_loss=mask_loss,
        )
        aug = cfg.TEST.AUG
        return {
            "backbone": backbone,
            "sem_seg_head": build_sem_seg_head(cfg, backbone.output_shape()),
            "criterion": criterion,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "semantic_on": mf.TEST.SEMANTIC_ON,
            "panoptic_on": mf.TEST.PANOPTIC_ON,
            "instance_on": mf.TEST.INSTANCE_ON,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "thing_ids": _thing_ids(cfg),
            "sem_seg_postprocess_before_inference": mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "panoptic_mask_on_pixels_only": mask2former,
            "instance_things_after_topk": mask2former,
            "tta": (
                {"min_sizes": list(aug.MIN_SIZES), "max_size": aug.MAX_SIZE, "flip": aug.FLIP}
                if aug.ENABLED
                else None
            ),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ shared
    def _predict(self, images: List[torch.Tensor]) -> Tuple[Dict[str, object], ImageList]:
        """(3, h_i, w_i) images -> predictions ("pred_masks" at 1/4 of (Hp, Wp)) and the ImageList."""
        images = [(x.to(self.device) - self.pixel_mean) / self.pixel_std for x in images]
        image_list = ImageList.from_tensors(images, self.size_divisibility)
        features = self.backbone(image_list.tensor)
        return self.sem_seg_head(features), image_list

    def forward(self, batched_inputs: List[dict]):
        """
        Args:
            batched_inputs: the common mapper's dicts: "image" (3, h, w); in
                training "segments" (Instances with gt_classes (T,), gt_masks
                (T, h', w') bool); at test time "height", "width" (optional).

        Returns:
            training: dict of weighted losses. Inference: one dict per image with
            "sem_seg" (K, H, W), "panoptic_seg" ((H, W) int32, segments_info),
            "instances" (Instances), as configured.
        """
        outputs, images = self._predict([x["image"] for x in batched_inputs])
        if self.training:
            targets = self.prepare_targets(batched_inputs, images)
            return self.criterion(outputs, targets)
        return self.inference(outputs, images, batched_inputs)

    def prepare_targets(self, batched_inputs: List[dict], images: ImageList) -> List[Dict[str, torch.Tensor]]:
        """Segments padded to the batch size (Hp, Wp): "labels" (T,), "masks" (T, Hp, Wp) bool."""
        hp, wp = images.tensor.shape[-2:]
        targets = []
        for x in batched_inputs:
            # "segments" (semantic / panoptic mappers) or "instances" (instance mappers)
            seg = x.get("segments", x.get("instances"))
            if seg is None:
                raise KeyError(
                    "MaskFormer training needs the 'segments' or 'instances' target in every input "
                    f"dict (got keys {sorted(x)}); the common mapper builds it from "
                    "INPUT.DATASET_MAPPER_NAME (see projects/maskformer/config.py)"
                )
            masks = seg.gt_masks
            if isinstance(masks, PolygonMasks):  # INPUT.MASK_FORMAT "polygon"
                masks = BitMasks.from_polygon_masks(masks, *seg.image_size)
            masks = masks.tensor if hasattr(masks, "tensor") else masks
            padded = torch.zeros((masks.shape[0], hp, wp), dtype=torch.bool, device=self.device)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks.to(self.device)
            targets.append({"labels": seg.gt_classes.to(self.device), "masks": padded})
        return targets

    # ------------------------------------------------------------------ inference
    def _semantic_at(self, mask_cls, masks, image_size, out_hw) -> torch.Tensor:
        """One image: (Q, K+1), (Q, Hp, Wp) logits -> (K, H, W) semantic scores."""
        if self.sem_seg_postprocess_before_inference:
            return semantic_inference(mask_cls, sem_seg_postprocess(masks, image_size, *out_hw))
        return sem_seg_postprocess(semantic_inference(mask_cls, masks), image_size, *out_hw)

    def _tta_predict(self, batch: torch.Tensor, out_hw: tuple) -> torch.Tensor:
        outputs, images = self._predict(list(batch))
        size = images.tensor.shape[-2:]
        masks = F.interpolate(outputs["pred_masks"], size=size, mode="bilinear", align_corners=False)
        return torch.stack(
            [
                self._semantic_at(outputs["pred_logits"][i], masks[i], images.image_sizes[i], out_hw)
                for i in range(len(batch))
            ]
        )

    def inference(
        self, outputs: Dict[str, object], images: ImageList, batched_inputs: List[dict]
    ) -> List[dict]:
        """Per image: the configured outputs at its original size ("height" x "width")."""
        results = []
        mask_cls_all, mask_pred_all = outputs["pred_logits"], outputs["pred_masks"]
        for i, x in enumerate(batched_inputs):  # per image: each has its own output size
            image_size = images.image_sizes[i]
            out_hw = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            mask_cls = mask_cls_all[i]
            padded_size = tuple(images.tensor.shape[-2:])
            result: Dict[str, object] = {}
            # (Q, H, W) at the output size, when semantic scores are combined after
            # resizing or panoptic / instance outputs need it
            resized = None
            if self.sem_seg_postprocess_before_inference:
                masks = F.interpolate(
                    mask_pred_all[i][None], size=padded_size, mode="bilinear", align_corners=False
                )[0]  # (Q, Hp, Wp)
                resized = sem_seg_postprocess(masks, image_size, *out_hw)
            if self.semantic_on and self.tta is not None:
                result["sem_seg"] = semantic_tta(self._tta_predict, x["image"], *out_hw, **self.tta)
            elif self.semantic_on and resized is not None:
                result["sem_seg"] = semantic_inference(mask_cls, resized)
            elif self.semantic_on:
                # upsampled to the padded image and cropped to the image: (K, h, w)
                scores = upsampled_semantic_inference(mask_cls, mask_pred_all[i], padded_size, image_size)
                result["sem_seg"] = sem_seg_postprocess(scores, image_size, *out_hw)
            if self.panoptic_on:
                result["panoptic_seg"] = panoptic_inference(
                    mask_cls,
                    resized,
                    thing_ids=self.thing_ids,
                    object_mask_threshold=self.object_mask_threshold,
                    overlap_threshold=self.overlap_threshold,
                    mask_on_pixels_only=self.panoptic_mask_on_pixels_only,
                )
            if self.instance_on:
                result["instances"] = instance_inference(
                    mask_cls,
                    resized,
                    topk=self.test_topk_per_image,
                    thing_ids=self.thing_ids,
                    things_after_topk=self.instance_things_after_topk,
                )
            results.append(result)
        return results
