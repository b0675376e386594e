"""Training targets of the common mapper, and the registry of their builders.

Shapes: H, W = augmented and padded image size; K = number of objects.

Built-in targets (output key = target name):

- ``"instances"``: ``Instances`` with ``gt_boxes`` (K, 4) XYXY, ``gt_classes`` (K,)
  int64 and, when the annotations have ``segmentation``, ``gt_masks``
  (``PolygonMasks`` or ``BitMasks`` (K, H, W), ``INPUT.MASK_FORMAT``).
  detectron2 semantics: crowd annotations dropped, empty ones filtered after
  augmentation, boxes recomputed from masks when ``recompute_boxes``. From the
  dict's ``annotations``; a panoptic-only dict (no ``annotations``) gives its
  non-crowd thing segments as ``BitMasks`` with tight boxes (there are no
  polygons to keep). RLE annotations with ``mask_format="polygon"`` are an
  error rather than a silent conversion: a run must get one mask type
  throughout, and rasterising some images only would mix types in a batch.
- ``"sem_seg"``: (H, W) int64 tensor of class ids, ``ignore_label`` where
  unlabeled or padded. From ``sem_seg_file_name``, else derived from the
  panoptic PNG (every segment, crowd included, gets its category, like
  detectron2's panoptic -> semantic conversion; void pixels get ``ignore_label``).
- ``"segments"``: mask-classification targets, ``Instances`` with ``gt_classes``
  (K,) int64 and ``gt_masks`` (K, H, W) bool tensor. From a panoptic
  annotation: one per non-crowd segment still visible after augmentation.
  Crowd segments give no segment, so their pixels are "no object" for every
  mask, as in MaskFormer's mappers (the ``"sem_seg"`` target still labels them).
  Semantic-only data: one segment per class present, ``ignore_label``
  excluded. No segment: K = 0 with shapes (0,) and (0, H, W).

Protocol for a project's own target (e.g. R2O's pairs of augmented views)::

    from d2ext.data.targets import register_target

    @register_target("r2o_views", maps=())
    def build_r2o_views(ctx: TargetContext, out: dict) -> None:
        out["views"] = ...  # from ctx.original_image, own random transforms

- ``maps``: the label maps the mapper must read, augment and pad for this
  target, a subset of ``{"sem_seg", "pan_seg"}``, or a callable
  ``dataset_dict -> that subset`` that raises :class:`TargetUnavailableError`
  (see :func:`require`) when the dict cannot provide what the target needs.
- The builder gets a :class:`TargetContext` (read-only by convention) and
  writes its fields into ``out``, the mapper's output dict. It must not read
  files itself: everything read lives in the context, so all targets share one
  read and one geometry. Use tensors (the DataLoader moves them cheaply).
- Register on import of the project package; the name goes into
  ``D2EXT.TARGETS`` or the meta-architecture's ``d2ext.model_io`` declaration.
  A name can be registered once (a duplicate is an error).

A builder that needs settings from the config (crop sizes, augmentation
strengths, ...) is a class with a ``from_config(cfg)`` classmethod returning
a callable ``(ctx, out) -> None``; the mapper built from a config calls it
once, so the settings are read once, not per image::

    @register_target("r2o_views", maps=())
    class R2OViews:
        def __init__(self, crop_size: int):
            self.crop_size = crop_size

        @classmethod
        def from_config(cls, cfg):
            return cls(crop_size=cfg.MODEL.R2O.CROP_SIZE)

        def __call__(self, ctx: TargetContext, out: dict) -> None:
            out["views"] = ...
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from d2ext.data.datasets.checks import DatasetError
from d2ext.registry import NamedRegistry

__all__ = [
    "LABEL_MAPS",
    "MapperSettings",
    "TargetBuilder",
    "TargetContext",
    "TargetRegistry",
    "TargetUnavailableError",
    "TARGET_BUILDERS",
    "has_panoptic",
    "has_semantic",
    "register_target",
    "require",
    "semantic_from_panoptic",
    "semantic_segments",
]

LABEL_MAPS = frozenset({"sem_seg", "pan_seg"})
_PANOPTIC_KEYS = ("pan_seg_file_name", "segments_info")
_SEMANTIC_KEYS = ("sem_seg_file_name",)


class TargetUnavailableError(DatasetError):
    """A requested target needs data that this dataset dict does not have."""


@dataclasses.dataclass(frozen=True)
class MapperSettings:
    is_train: bool
    image_format: str
    ignore_label: int
    instance_mask_format: str
    recompute_boxes: bool
    size_divisibility: int


@dataclasses.dataclass
class TargetContext:
    """What a builder may use. Arrays are after augmentation and padding.

    Attributes:
        image: (H, W, C) image as the model gets it (``image_format``).
        original_image: (H0, W0, C) image as read, before any augmentation.
        transforms: the transforms that were applied (for annotations, points...).
        image_size: (h, w) after augmentation, before padding (h <= H, w <= W).
        sem_seg: (H, W) int64 class ids, ``ignore_label`` in padding; or None.
        pan_ids: (H, W) int64 panoptic segment ids, 0 = void and padding; or None.
        dataset_dict: the mapper's copy of the input dict; ``annotations`` are
            still in original image coordinates.
        settings: the mapper's settings.
    """

    image: np.ndarray
    original_image: np.ndarray
    transforms: T.TransformList
    image_size: Tuple[int, int]
    sem_seg: Optional[np.ndarray]
    pan_ids: Optional[np.ndarray]
    dataset_dict: dict
    settings: MapperSettings

    @property
    def padded_size(self) -> Tuple[int, int]:
        return tuple(self.image.shape[:2])


MapsSpec = Union[Iterable[str], Callable[[dict], Iterable[str]]]


class TargetBuilder(NamedTuple):
    name: str
    build: Callable[[TargetContext, dict], None]
    maps_spec: MapsSpec

    def maps(self, dataset_dict: dict) -> FrozenSet[str]:
        """Label maps needed for this dict; raises TargetUnavailableError."""
        spec = self.maps_spec(dataset_dict) if callable(self.maps_spec) else self.maps_spec
        maps = frozenset(spec)
        if not maps <= LABEL_MAPS:
            raise ValueError(
                f"target builder {self.name!r} asks for label maps {sorted(maps - LABEL_MAPS)}; "
                f"known: {sorted(LABEL_MAPS)}"
            )
        if "sem_seg" in maps:
            require(self.name, dataset_dict, [_SEMANTIC_KEYS, _PANOPTIC_KEYS])
        if "pan_seg" in maps:
            require(self.name, dataset_dict, [_PANOPTIC_KEYS])
        return maps

    @property
    def configurable(self) -> bool:
        return callable(getattr(self.build, "from_config", None))

    def bind(self, cfg=None) -> "TargetBuilder":
        """This builder with its settings read from ``cfg`` (a no-op for plain functions).

        A configurable builder needs a config: without one it is an error, not a
        builder silently running on made-up defaults.
        """
        if not self.configurable:
            return self
        if cfg is None:
            raise ValueError(
                f"target builder {self.name!r} reads its settings from the config "
                f"({self.build.__qualname__}.from_config): build the mapper from a config "
                "(CommonDatasetMapper(cfg, ...)), or pass the configured builder itself"
            )
        return self._replace(build=self.build.from_config(cfg))


class TargetRegistry(NamedRegistry[TargetBuilder]):
    """Name -> :class:`TargetBuilder` (registry "D2EXT_TARGET_BUILDERS")."""

    def __init__(self, name: str):
        super().__init__(
            name,
            hint="A project registers its own with d2ext.data.targets.register_target "
            "when its package is imported.",
        )

    def register(self, name: str, *, maps: MapsSpec = ()) -> Callable:  # type: ignore[override]
        """Decorator: registers a function ``(ctx, out) -> None``, or a class whose
        ``from_config(cfg)`` returns one, as the builder of target ``name``."""

        def deco(fn):
            if not callable(maps):
                unknown = set(maps) - LABEL_MAPS
                if unknown:
                    raise ValueError(f"target {name!r}: unknown label maps {sorted(unknown)}")
            spec = maps if callable(maps) else tuple(maps)
            NamedRegistry.register(self, name, TargetBuilder(name, fn, spec))
            return fn

        return deco


TARGET_BUILDERS = TargetRegistry("D2EXT_TARGET_BUILDERS")
register_target = TARGET_BUILDERS.register


# ---------------------------------------------------------------------------
# What a dict can provide
# ---------------------------------------------------------------------------
def has_panoptic(dataset_dict: dict) -> bool:
    return all(k in dataset_dict for k in _PANOPTIC_KEYS)


def has_semantic(dataset_dict: dict) -> bool:
    return "sem_seg_file_name" in dataset_dict or has_panoptic(dataset_dict)


def require(target: str, dataset_dict: dict, alternatives: List[Tuple[str, ...]]) -> None:
    """Raises unless ``dataset_dict`` has every key of at least one alternative."""
    if any(all(k in dataset_dict for k in keys) for keys in alternatives):
        return
    wanted = " or ".join("(" + " + ".join(repr(k) for k in keys) + ")" for keys in alternatives)
    missing = sorted({k for keys in alternatives for k in keys if k not in dataset_dict})
    raise TargetUnavailableError(
        f"target {target!r} cannot be built for "
        f"{dataset_dict.get('file_name', '<no file_name>')!r}: "
        f"it needs the dataset dict keys {wanted}; missing: {missing} "
        f"(the dict has {sorted(dataset_dict)}). Use a dataset that provides them, "
        "or change D2EXT.TARGETS / the model."
    )


def semantic_from_panoptic(
    pan_ids: np.ndarray, segments_info: List[dict], ignore_label: int
) -> np.ndarray:
    """(H, W) panoptic ids -> (H, W) category ids (``ignore_label`` where void).

    uint8 when every value fits, so it resizes like any label PNG; else int32.
    """
    seg_ids = np.array([s["id"] for s in segments_info], dtype=np.int64)
    seg_cls = np.array([s["category_id"] for s in segments_info], dtype=np.int64)
    uniq, inverse = np.unique(pan_ids, return_inverse=True)
    lut = np.full(len(uniq), ignore_label, dtype=np.int64)
    if len(seg_ids):
        order = np.argsort(seg_ids)
        pos = np.clip(np.searchsorted(seg_ids[order], uniq), 0, len(seg_ids) - 1)
        found = seg_ids[order][pos] == uniq
        lut[found] = seg_cls[order][pos[found]]
    narrow = 0 <= lut.min(initial=0) and lut.max(initial=0) <= 255 and ignore_label <= 255
    dtype = np.uint8 if narrow else np.int32
    return lut.astype(dtype)[inverse.reshape(pan_ids.shape)]


# ---------------------------------------------------------------------------
# Built-in builders
# ---------------------------------------------------------------------------
def _pad_masks(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(K, h, w) -> (K, H, W), False in the padding."""
    ph, pw = size[0] - masks.shape[1], size[1] - masks.shape[2]
    if ph == 0 and pw == 0:
        return masks
    return F.pad(masks, (0, pw, 0, ph), value=False)


def _segment_masks(pan_ids: np.ndarray, infos: List[dict]) -> Tuple[np.ndarray, np.ndarray]:
    """-> classes (K,) int64 and masks (K, H, W) bool of the non-empty segments."""
    ids = np.array([s["id"] for s in infos], dtype=np.int64)
    classes = np.array([s["category_id"] for s in infos], dtype=np.int64)
    masks = pan_ids[None] == ids[:, None, None]
    keep = masks.any(axis=(1, 2))
    return classes[keep], masks[keep]


def _instances_maps(dataset_dict: dict) -> FrozenSet[str]:
    if "annotations" in dataset_dict:
        return frozenset()
    require("instances", dataset_dict, [("annotations",), _PANOPTIC_KEYS])
    return frozenset({"pan_seg"})


def _check_no_rle_for_polygons(ctx: TargetContext, annos: List[dict]) -> None:
    for anno in annos:
        if isinstance(anno.get("segmentation"), dict):
            raise DatasetError(
                f"{ctx.dataset_dict.get('file_name')!r}: annotation id={anno.get('id')} stores "
                "its mask as RLE, but INPUT.MASK_FORMAT is 'polygon'. Set "
                "INPUT.MASK_FORMAT=bitmask for this dataset (the mapper does not convert "
                "RLE to polygons)."
            )


def _instances_from_annotations(ctx: TargetContext) -> Instances:
    settings = ctx.settings
    annos = [dict(a) for a in ctx.dataset_dict["annotations"] if not a.get("iscrowd", 0)]
    if settings.instance_mask_format == "polygon":
        _check_no_rle_for_polygons(ctx, annos)
    try:
        annos = [
            utils.transform_instance_annotations(a, ctx.transforms, ctx.image_size) for a in annos
        ]
    except ModuleNotFoundError as e:  # detectron2 crops polygons with shapely
        if e.name != "shapely":
            raise
        raise ModuleNotFoundError(
            "cropping polygon masks needs the 'shapely' package (detectron2's "
            "CropTransform.apply_polygons): install it, or disable INPUT.CROP",
            name="shapely",
        ) from e
    inst = utils.annotations_to_instances(
        annos, ctx.image_size, mask_format=settings.instance_mask_format
    )
    has_masks = inst.has("gt_masks")
    if settings.recompute_boxes and has_masks:
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst = utils.filter_empty_instances(inst)

    out = Instances(ctx.padded_size, gt_boxes=inst.gt_boxes, gt_classes=inst.gt_classes)
    if has_masks:
        masks = inst.gt_masks
        if isinstance(masks, BitMasks):
            masks = BitMasks(_pad_masks(masks.tensor, ctx.padded_size))
        out.gt_masks = masks
    elif not annos:
        # No object: still give the field, with the right type and shape.
        if settings.instance_mask_format == "bitmask":
            out.gt_masks = BitMasks(torch.zeros((0, *ctx.padded_size), dtype=torch.bool))
        else:
            out.gt_masks = PolygonMasks([])
    return out


def _instances_from_panoptic(ctx: TargetContext) -> Instances:
    infos = [
        s
        for s in ctx.dataset_dict["segments_info"]
        if s.get("isthing", True) and not s.get("iscrowd", 0)
    ]
    classes, masks = _segment_masks(ctx.pan_ids, infos)
    bitmasks = BitMasks(torch.from_numpy(masks))
    boxes = bitmasks.get_bounding_boxes() if len(masks) else Boxes(torch.zeros((0, 4)))
    return Instances(
        ctx.padded_size,
        gt_boxes=boxes,
        gt_classes=torch.as_tensor(classes, dtype=torch.int64),
        gt_masks=bitmasks,
    )


@register_target("instances", maps=_instances_maps)
def build_instances(ctx: TargetContext, out: dict) -> None:
    if "annotations" in ctx.dataset_dict:
        out["instances"] = _instances_from_annotations(ctx)
    else:
        out["instances"] = _instances_from_panoptic(ctx)


@register_target("sem_seg", maps=("sem_seg",))
def build_sem_seg(ctx: TargetContext, out: dict) -> None:
    out["sem_seg"] = torch.as_tensor(ctx.sem_seg, dtype=torch.int64)


def _segments_maps(dataset_dict: dict) -> FrozenSet[str]:
    if has_panoptic(dataset_dict):
        return frozenset({"pan_seg"})
    require("segments", dataset_dict, [_PANOPTIC_KEYS, _SEMANTIC_KEYS])
    return frozenset({"sem_seg"})


def semantic_segments(ctx: TargetContext) -> Instances:
    """One segment per class present in ``ctx.sem_seg`` (ignore label excluded), classes
    ascending: ``Instances`` with gt_classes (K,) int64 and gt_masks (K, H, W) bool."""
    present = np.unique(ctx.sem_seg)
    classes = present[present != ctx.settings.ignore_label].astype(np.int64)
    return _segments_instances(ctx, classes, ctx.sem_seg[None] == classes[:, None, None])


def _segments_instances(ctx: TargetContext, classes: np.ndarray, masks: np.ndarray) -> Instances:
    return Instances(
        ctx.padded_size,
        gt_classes=torch.as_tensor(classes, dtype=torch.int64),
        gt_masks=torch.from_numpy(np.ascontiguousarray(masks)),
    )


@register_target("segments", maps=_segments_maps)
def build_segments(ctx: TargetContext, out: dict) -> None:
    if ctx.pan_ids is not None and has_panoptic(ctx.dataset_dict):
        infos = [s for s in ctx.dataset_dict["segments_info"] if not s.get("iscrowd", 0)]
        out["segments"] = _segments_instances(ctx, *_segment_masks(ctx.pan_ids, infos))
    else:
        out["segments"] = semantic_segments(ctx)
