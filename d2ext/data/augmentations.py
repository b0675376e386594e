"""Augmentations of the common mapper, built from ``INPUT.*``.

Training, in this order::

    [crop (relative types)] -> resize shortest edge -> [crop (absolute types)]
        -> [SSD colour jitter] -> [flip]

- Resize: detectron2's ``ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN,
  MIN_SIZE_TRAIN_SAMPLING)`` ("range": a [min, max] interval, "choice": a list).
- Crop (``INPUT.CROP.ENABLED``): an ``absolute``/``absolute_range`` crop size is
  in output pixels, so it comes after the resize (as in MaskFormer and
  DeepLab); a ``relative``/``relative_range`` crop comes first, as in
  detectron2's ``DatasetMapper``, so the resize still sets the output scale.
  With ``INPUT.CROP.SINGLE_CATEGORY_MAX_AREA < 1`` the crop is
  :class:`CategoryAreaCrop` (detectron2's ``RandomCrop_CategoryAreaConstraint``,
  ignore label exempt). It needs a semantic map: the mapper reads one whenever
  the dataset dict has ``sem_seg_file_name`` or a panoptic annotation, even if
  no target asks for it. For instance-only data there is no semantic map and
  the crop silently degrades to detectron2's plain ``RandomCrop`` of the same
  type and size.
- Colour (``INPUT.COLOR_AUG_SSD``): :class:`ColorAugSSD`, photometric only.
- Flip: ``INPUT.RANDOM_FLIP`` in {"horizontal", "vertical", "none"}.

Test time: ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`` only.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

__all__ = [
    "CategoryAreaCrop",
    "ColorAugSSD",
    "ColorJitterTransform",
    "build_augmentations",
]

_ABSOLUTE_CROPS = ("absolute", "absolute_range")


class ColorJitterTransform(T.Transform):
    """Deterministic SSD photometric distortion of a uint8 image.

    Steps (each result clipped to [0, 255] and rounded down to uint8, as in SSD):
    brightness (add ``brightness``), contrast (multiply by ``contrast``) either
    first or last, saturation (multiply S in HSV), hue (add ``hue`` to H, cv2's
    [0, 180) range). Saturation and hue need a 3-channel "BGR" or "RGB" image and
    are skipped for other formats. Coordinates and segmentations are unchanged.
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 1.0,
        saturation: float = 1.0,
        hue: int = 0,
        contrast_last: bool = False,
        img_format: str = "BGR",
    ):
        super().__init__()
        self._set_attributes(locals())

    @staticmethod
    def _affine(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def _hsv(self, img: np.ndarray) -> np.ndarray:
        if self.saturation == 1.0 and self.hue == 0:
            return img  # HSV round trips are lossy in uint8: skip when a no-op
        if img.ndim != 3 or img.shape[2] != 3 or self.img_format not in ("BGR", "RGB"):
            return img
        to_hsv, from_hsv = (
            (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
            if self.img_format == "BGR"
            else (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB)
        )
        hsv = cv2.cvtColor(np.ascontiguousarray(img), to_hsv).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + self.hue) % 180
        hsv[..., 1] = np.clip(np.rint(hsv[..., 1] * self.saturation), 0, 255)
        return cv2.cvtColor(hsv.astype(np.uint8), from_hsv)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8:
            raise ValueError(f"ColorJitterTransform expects a uint8 image, got {img.dtype}")
        out = img
        if self.brightness != 0.0:
            out = self._affine(out, beta=self.brightness)
        if self.contrast != 1.0 and not self.contrast_last:
            out = self._affine(out, alpha=self.contrast)
        out = self._hsv(out)
        if self.contrast != 1.0 and self.contrast_last:
            out = self._affine(out, alpha=self.contrast)
        return out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> T.Transform:
        # Geometry is untouched; the photometric change is not invertible.
        return T.NoOpTransform()


class ColorAugSSD(T.Augmentation):
    """SSD-style colour jitter: each of brightness, contrast, saturation and hue
    is applied with probability ``prob``, contrast before or after the HSV part
    with equal chance. Only the image changes (see :class:`ColorJitterTransform`).
    """

    def __init__(
        self,
        img_format: str = "BGR",
        brightness_delta: float = 32.0,
        contrast_range: Tuple[float, float] = (0.5, 1.5),
        saturation_range: Tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        prob: float = 0.5,
    ):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> T.Transform:
        def maybe(sample, identity):
            return sample() if np.random.rand() < self.prob else identity

        return ColorJitterTransform(
            brightness=float(
                maybe(lambda: np.random.uniform(-self.brightness_delta, self.brightness_delta), 0.0)
            ),
            contrast=float(maybe(lambda: np.random.uniform(*self.contrast_range), 1.0)),
            saturation=float(maybe(lambda: np.random.uniform(*self.saturation_range), 1.0)),
            hue=int(maybe(lambda: np.random.randint(-self.hue_delta, self.hue_delta + 1), 0)),
            contrast_last=bool(np.random.rand() < 0.5),
            img_format=self.img_format,
        )


class CategoryAreaCrop(T.RandomCrop_CategoryAreaConstraint):
    """detectron2's category-area-constrained crop that also accepts inputs
    without a semantic map (instance-only data): then it is the plain
    ``RandomCrop(crop_type, crop_size)``, since the constraint cannot be evaluated.

    As in detectron2, up to 10 windows are tried; if none satisfies the
    constraint the last one is used.
    """

    def get_transform(self, image: np.ndarray, sem_seg: Optional[np.ndarray]) -> T.Transform:
        if sem_seg is None:
            return self.crop_aug.get_transform(image)
        return super().get_transform(image, sem_seg)


def _train_ignore_label(cfg) -> int:
    if not cfg.DATASETS.TRAIN:
        return 255
    return int(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", 255))


def build_augmentations(
    cfg, is_train: bool, *, ignore_label: Optional[int] = None
) -> List[T.Augmentation]:
    """Augmentations of the common mapper (see the module docstring for the order).

    Args:
        ignore_label: label exempt from the category-area constraint; default the
            ``ignore_label`` of the first training dataset's metadata (255).
    """
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]

    resize = T.ResizeShortestEdge(
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    )
    augs: List[T.Augmentation] = [resize]

    crop_cfg = cfg.INPUT.CROP
    if crop_cfg.ENABLED:
        max_area = float(crop_cfg.SINGLE_CATEGORY_MAX_AREA)
        if max_area < 1.0:
            if ignore_label is None:
                ignore_label = _train_ignore_label(cfg)
            crop = CategoryAreaCrop(crop_cfg.TYPE, crop_cfg.SIZE, max_area, ignore_label)
        else:
            crop = T.RandomCrop(crop_cfg.TYPE, crop_cfg.SIZE)
        if crop_cfg.TYPE in _ABSOLUTE_CROPS:
            augs.append(crop)
        else:
            augs.insert(0, crop)

    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSD(img_format=cfg.INPUT.FORMAT))

    flip = cfg.INPUT.RANDOM_FLIP
    if flip not in ("horizontal", "vertical", "none"):
        raise ValueError(
            f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', got {flip!r}"
        )
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    return augs
