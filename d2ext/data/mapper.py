"""The one dataset mapper of every project: read, augment once, build targets.

For one dataset dict (``d2ext/data/CONVENTIONS.md``) at training time:

1. read the image (``utils.read_image`` + ``utils.check_image_size``);
2. read the label maps the requested targets need (``d2ext.data.targets``), and
   the semantic map the category-area crop needs when the dict has one: the
   semantic PNG, or the panoptic PNG (checked against ``segments_info``), from
   which a missing semantic map is derived. Semantic values must be class ids
   of the training datasets (``len(stuff_classes)``) or the ignore label; a file
   that cannot be decoded or holds other values raises a DatasetError naming it;
3. run every augmentation once on one ``AugInput`` carrying the image, the
   semantic map and the panoptic map, so that all share one geometry;
4. pad image / semantic / panoptic maps to ``size_divisibility`` (0 / ignore / 0);
5. call each target builder, which writes its fields into the output dict.

Output: the input dict's fields (``annotations`` consumed), ``image`` (C, H, W)
tensor (uint8 for the usual formats), ``height`` / ``width`` of the original
image, and one key per target. At test time: the resized image and the original
size, no targets, no label map read, no padding (the model pads and resizes
its outputs back to ``height`` x ``width``), and the inference prompts the
model accepts (``d2ext.model_io.PROMPTS``), carried over from the dataset dict
and transformed with the image: ``points`` (N, 2) xy in original-image pixels
become an (N, 2) float32 tensor in the resized (and flipped) image's pixels.

Label maps are resized with nearest neighbour through PIL's uint8 path, the
same one RLE instance masks take in ``transform_instance_annotations``: the
panoptic map as its RGB PNG, a semantic map wider than 8 bits as 3 bytes. So a
pixel keeps the same source pixel in every target (detectron2's resize of
non-uint8 arrays goes through torch, which samples different pixels).
"""
from __future__ import annotations

import copy
import logging
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from d2ext.data.augmentations import build_augmentations
from d2ext.data.datasets.checks import (
    UNREADABLE_IMAGE_ERRORS,
    DatasetError,
    check_label_size,
    check_label_values,
    check_panoptic_png,
)
from d2ext.data.targets import (
    TARGET_BUILDERS,
    MapperSettings,
    TargetBuilder,
    TargetContext,
    has_panoptic,
    has_semantic,
    semantic_from_panoptic,
)
from d2ext.model_io import PROMPTS, model_prompts, model_targets, model_train_augmentations

__all__ = [
    "CommonDatasetMapper",
    "LabelMapsAugInput",
    "read_image_named",
    "transform_label_map",
    "transform_points",
]

logger = logging.getLogger(__name__)


def _to_bytes(labels: np.ndarray) -> np.ndarray:
    """(H, W) ints in [0, 2**24) -> (H, W, 3) uint8, little-endian."""
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= 1 << 24):
        raise ValueError("label maps must hold values in [0, 2**24)")
    return np.stack([(labels >> s) & 255 for s in (0, 8, 16)], axis=-1).astype(np.uint8)


def _from_bytes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


def transform_label_map(tfm: T.Transform, labels: np.ndarray) -> np.ndarray:
    """Applies ``tfm`` to an (H, W) label map through the uint8 segmentation path."""
    if labels.dtype == np.uint8:
        return tfm.apply_segmentation(labels)
    out = _from_bytes(tfm.apply_segmentation(_to_bytes(labels)))
    return out.astype(labels.dtype)


def transform_points(tfm: T.Transform, points, source: str = "points") -> torch.Tensor:
    """(N, 2) xy in the input image's pixels -> (N, 2) float32 xy after ``tfm``.

    Points are continuous coordinates (a pixel's centre is at +0.5), the same
    convention as boxes, so they follow ``apply_coords`` exactly.

    Raises:
        ValueError: not an (N, 2) array of finite numbers (``source`` names it).
    """
    array = np.asarray(points.cpu() if isinstance(points, torch.Tensor) else points, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{source}: expected (N, 2) xy points, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{source}: points must be finite, got {array[~np.isfinite(array).all(1)].tolist()}")
    return torch.as_tensor(tfm.apply_coords(array.copy()), dtype=torch.float32)


class LabelMapsAugInput(T.AugInput):
    """``AugInput`` that also carries the panoptic map (as its (H, W, 3) uint8
    RGB encoding) and sends every label map through the uint8 nearest path."""

    def __init__(
        self,
        image: np.ndarray,
        *,
        sem_seg: Optional[np.ndarray] = None,
        pan_seg: Optional[np.ndarray] = None,
    ):
        super().__init__(image, sem_seg=sem_seg)
        self.pan_seg = pan_seg

    def transform(self, tfm: T.Transform) -> None:
        self.image = tfm.apply_image(self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = transform_label_map(tfm, self.sem_seg)
        if self.pan_seg is not None:
            self.pan_seg = tfm.apply_segmentation(self.pan_seg)


def _pad(array: np.ndarray, size: Sequence[int], value: int) -> np.ndarray:
    ph, pw = size[0] - array.shape[0], size[1] - array.shape[1]
    if ph == 0 and pw == 0:
        return array
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="constant", constant_values=value)


def read_image_named(path: str, dataset_dict: dict, what: str, **kwargs) -> np.ndarray:
    """``utils.read_image(path, **kwargs)``; a file that cannot be decoded raises a
    DatasetError naming it (and the image it labels), the decoder's error as cause."""
    try:
        return utils.read_image(path, **kwargs)
    except UNREADABLE_IMAGE_ERRORS as e:
        image = dataset_dict.get("file_name")
        of_image = f" (labels of image {image})" if image and image != path else ""
        raise DatasetError(
            f"{path}: cannot read this {what}{of_image}: {type(e).__name__}: {e}"
        ) from e


def _semantic_classes(dataset_names: Sequence[str]) -> Optional[int]:
    """len(stuff_classes) of the training datasets (the largest if they differ:
    the model's class count is checked against each elsewhere, so no false
    alarm here); None if none is registered with stuff_classes."""
    counts = [
        len(MetadataCatalog.get(n).stuff_classes)
        for n in dataset_names
        if n in MetadataCatalog.list() and MetadataCatalog.get(n).get("stuff_classes") is not None
    ]
    return max(counts) if counts else None


class CommonDatasetMapper:
    """Maps a dataset dict to the model's input (see the module docstring)."""

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[Union[T.Augmentation, T.Transform]],
        image_format: str,
        targets: Sequence[Union[str, TargetBuilder]] = (),
        prompts: Sequence[str] = (),
        ignore_label: int = 255,
        num_classes: Optional[int] = None,
        instance_mask_format: str = "polygon",
        recompute_boxes: bool = False,
        size_divisibility: int = -1,
    ):
        """
        Args:
            is_train: build targets (training) or only the image (inference).
            augmentations: applied in order, once, to the image and every target.
            image_format: see ``detectron2.data.detection_utils.read_image``.
            targets: names registered in ``d2ext.data.targets.TARGET_BUILDERS``
                (configurable builders need a config: ``from_config`` binds
                them), or bound :class:`TargetBuilder` objects; built at
                training time only.
            prompts: inference prompts (``d2ext.model_io.PROMPTS``) to carry
                from the dataset dict to the model at test time, transformed
                with the image; the dict may omit them.
            ignore_label: semantic label of unlabeled and padded pixels.
            num_classes: number of semantic classes; every semantic label read
                (or derived from a panoptic annotation) must be in
                [0, num_classes) or ``ignore_label``, else a DatasetError names
                the file. None: values are not checked.
            instance_mask_format: "polygon" or "bitmask" for the "instances" target.
            recompute_boxes: instance boxes = tight boxes of the augmented masks.
            size_divisibility: pad training images and targets to a multiple of
                this at the bottom / right; <= 0 leaves padding to the model.
        """
        if instance_mask_format not in ("polygon", "bitmask"):
            raise ValueError(
                f"instance_mask_format must be 'polygon' or 'bitmask', got {instance_mask_format!r}"
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self._builders = [  # looked up now: an unknown name fails early
            t if isinstance(t, TargetBuilder) else TARGET_BUILDERS.get(t).bind() for t in targets
        ]
        self.targets = tuple(b.name for b in self._builders)
        unknown = set(prompts) - set(PROMPTS)
        if unknown:
            raise ValueError(f"unknown prompts {sorted(unknown)}; known: {sorted(PROMPTS)}")
        self.prompts = tuple(prompts)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.settings = MapperSettings(
            is_train=is_train,
            image_format=image_format,
            ignore_label=int(ignore_label),
            instance_mask_format=instance_mask_format,
            recompute_boxes=recompute_boxes,
            size_divisibility=int(size_divisibility),
        )
        # The category-area crop looks at the semantic map: read it when the
        # dict has one even if no target needs it.
        self._crop_reads_semantics = any(
            isinstance(a, T.RandomCrop_CategoryAreaConstraint) and a.single_category_max_area < 1.0
            for a in augmentations
        )
        mode = "training" if is_train else "inference"
        logger.info(
            f"[CommonDatasetMapper] {mode}: augmentations {augmentations}, "
            f"targets {list(self.targets)}"
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        ignore_label = (
            MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", 255)
            if cfg.DATASETS.TRAIN
            else 255
        )
        augmentations = model_train_augmentations(cfg) if is_train else None
        if augmentations is None:
            augmentations = build_augmentations(cfg, is_train, ignore_label=ignore_label)
        return {
            "is_train": is_train,
            "augmentations": augmentations,
            "image_format": cfg.INPUT.FORMAT,
            "targets": [TARGET_BUILDERS.get(n).bind(cfg) for n in sorted(model_targets(cfg))]
            if is_train
            else (),
            "prompts": () if is_train else sorted(model_prompts(cfg)),
            "ignore_label": ignore_label,
            "num_classes": _semantic_classes(cfg.DATASETS.TRAIN),
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            # As detectron2: a crop cuts objects, so their boxes no longer fit.
            "recompute_boxes": bool(is_train and cfg.INPUT.CROP.ENABLED and cfg.MODEL.MASK_ON),
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY if is_train else -1,
        }

    # -- reading ------------------------------------------------------------
    def _read_semantic(self, dataset_dict: dict, image_hw) -> np.ndarray:
        path = dataset_dict["sem_seg_file_name"]
        # mode kept: "L"/"P" 8 bit, "I;16"/"I" wider
        labels = read_image_named(path, dataset_dict, "semantic label map")
        if labels.ndim == 3:
            raise DatasetError(
                f"semantic label map {path!r} (for {dataset_dict.get('file_name')!r}) has "
                f"{labels.shape[2]} channels; expected a single-channel PNG of class ids"
            )
        check_label_size(labels, image_hw, path, dataset_dict.get("file_name"))
        if self.num_classes is not None:
            # Before the narrowing below, which would wrap values > 255 silently.
            check_label_values(
                labels, self.num_classes, self.settings.ignore_label, path, dataset_dict.get("file_name")
            )
        if labels.dtype != np.uint8:
            fits = labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255)
            narrow = fits and self.settings.ignore_label <= 255
            labels = labels.astype(np.uint8 if narrow else np.int32)
        return labels

    def _read_panoptic(self, dataset_dict: dict, image_hw):
        """-> (H, W, 3) uint8 RGB encoding and (H, W) int64 segment ids."""
        path = dataset_dict["pan_seg_file_name"]
        rgb = read_image_named(path, dataset_dict, "panoptic PNG", format="RGB")
        ids = _from_bytes(rgb)  # id = R + 256 G + 256^2 B
        check_label_size(ids, image_hw, path, dataset_dict.get("file_name"))
        check_panoptic_png(ids, dataset_dict["segments_info"], path)
        return rgb, ids

    def _check_segment_classes(self, dataset_dict: dict) -> None:
        """The semantic map derived from a panoptic annotation holds its segments'
        category ids: those must be class ids (one check per segment, not per pixel)."""
        if self.num_classes is None:
            return
        bad = sorted(
            {int(s["category_id"]) for s in dataset_dict["segments_info"]}
            - set(range(self.num_classes))
        )
        if bad:
            raise DatasetError(
                f"{dataset_dict['pan_seg_file_name']}: segments_info category ids {bad} are not "
                f"class ids in [0, {self.num_classes}) (labels of image {dataset_dict.get('file_name')}); "
                "the semantic labels derived from them would be out of range"
            )

    # -- mapping ------------------------------------------------------------
    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image_named(
            dataset_dict["file_name"], dataset_dict, "image", format=self.settings.image_format
        )
        utils.check_image_size(dataset_dict, image)
        original_image = image
        image_hw = image.shape[:2]

        if not self.is_train:
            aug_input = T.AugInput(image)
            transforms = self.augmentations(aug_input)
            image = aug_input.image
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            for name in self.prompts:
                if name in dataset_dict:
                    source = f"{name!r} of {dataset_dict['file_name']!r}"
                    dataset_dict[name] = transform_points(transforms, dataset_dict[name], source)
            return dataset_dict

        maps = set()
        for builder in self._builders:
            maps |= builder.maps(dataset_dict)  # raises if the dict cannot provide them
        if self._crop_reads_semantics and has_semantic(dataset_dict):
            maps.add("sem_seg")

        sem_seg = pan_rgb = None
        sem_from_pan = "sem_seg" in maps and "sem_seg_file_name" not in dataset_dict
        if "pan_seg" in maps or sem_from_pan:
            pan_rgb, pan_ids = self._read_panoptic(dataset_dict, image_hw)
        if "sem_seg" in maps:
            if "sem_seg_file_name" in dataset_dict:
                sem_seg = self._read_semantic(dataset_dict, image_hw)
            else:
                self._check_segment_classes(dataset_dict)
                sem_seg = semantic_from_panoptic(
                    pan_ids, dataset_dict["segments_info"], self.settings.ignore_label
                )
        aug_input = LabelMapsAugInput(
            image, sem_seg=sem_seg, pan_seg=pan_rgb if "pan_seg" in maps else None
        )
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_size = tuple(image.shape[:2])

        sem_seg = None if aug_input.sem_seg is None else aug_input.sem_seg.astype(np.int64)
        pan_ids = None if aug_input.pan_seg is None else _from_bytes(aug_input.pan_seg)
        div = self.settings.size_divisibility
        if div > 0:
            padded = [int(np.ceil(s / div)) * div for s in image_size]
            image = _pad(image, padded, 0)
            if sem_seg is not None:
                sem_seg = _pad(sem_seg, padded, self.settings.ignore_label)
            if pan_ids is not None:
                pan_ids = _pad(pan_ids, padded, 0)

        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        ctx = TargetContext(
            image=image,
            original_image=original_image,
            transforms=transforms,
            image_size=image_size,
            sem_seg=sem_seg,
            pan_ids=pan_ids,
            dataset_dict=dataset_dict,
            settings=self.settings,
        )
        for builder in self._builders:
            builder.build(ctx, dataset_dict)
        dataset_dict.pop("annotations", None)
        return dataset_dict
