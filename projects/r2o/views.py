"""The ``"r2o_views"`` target of the common mapper: R2O's two augmented views.

Shapes: S = MODEL.R2O.VIEWS.CROP_SIZE, G = MODEL.R2O.VIEWS.WHOLE_SIZE,
(H0, W0) = the original image as read.

From the original image (not the mapper's augmented one), per training sample::

    out["r2o_views"] = {
        "view1", "view2": (3, S, S) uint8, channels in INPUT.FORMAT order,
        "whole":          (3, G, G) uint8, the original resized (bilinear), no augmentation,
        "boxes":          (2, 4) float32 XYXY, each view's crop in the whole image's pixels
                          (continuous: the crop covers [x0, x1) x [y0, y1)),
        "flips":          (2,) bool, the view was flipped horizontally after cropping,
        "superpixels":    (G, G) int64 SLIC labels 0..n-1 of the whole image, all present
                          (absent in BYOL mode, whose training never reads them),
    }

A view (BYOL's augmentations): random resized crop (torchvision's sampling:
10 tries, then a centre crop at the nearest allowed aspect ratio), resize to S
(bilinear, antialiased), horizontal flip, colour jitter (brightness, contrast,
saturation, hue in a random order), grayscale, Gaussian blur (kernel ~10 % of
S, odd; sigma uniform in [0.1, 2.0]), solarize (threshold 128 of 255).
Photometric steps run in float RGB and the view is rounded to uint8 once at
the end. The random numbers come from ``numpy.random``, the source d2ext's
mapper augmentations use and the resumable loader seeds per data position, so
a sample's views depend on the seed and its position only.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from d2ext.data.targets import TargetContext, register_target

from .superpixels import SuperpixelCache, slic_superpixels

__all__ = ["R2OViews", "gaussian_kernel_size", "random_resized_crop_params"]

_KEY = "MODEL.R2O.VIEWS."
_FORMATS = ("RGB", "BGR")
_WHOLE_DIVISOR = 32  # the whole image goes through the backbone: a whole number of res5 cells


def random_resized_crop_params(
    height: int, width: int, scale: Sequence[float], ratio: Sequence[float]
) -> Tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` drawn from ``numpy.random``.

    Returns:
        (top, left, h, w) of the crop in pixels, inside the (height, width) image.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * np.random.uniform(scale[0], scale[1])
        aspect = math.exp(np.random.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(np.random.randint(0, height - h + 1))
            left = int(np.random.randint(0, width - w + 1))
            return top, left, h, w
    # Fallback: the whole image, cut to the nearest allowed aspect ratio, centred.
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = min(height, max(1, int(round(w / min(ratio)))))
    elif in_ratio > max(ratio):
        h = height
        w = min(width, max(1, int(round(h * max(ratio)))))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def gaussian_kernel_size(crop_size: int) -> int:
    """Odd kernel of about 10 % of the crop (BYOL: 23 for 224), at least 3."""
    k = int(0.1 * crop_size)
    return max(3, k + 1 - k % 2)


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{_KEY}{name} must be a probability in [0, 1], got {value!r}")


def _check_pair(name: str, value, low: float, high: float, low_open: bool) -> Tuple[float, float]:
    try:
        a, b = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"{_KEY}{name} must be a pair of numbers, got {value!r}") from None
    low_ok = a > low if low_open else a >= low
    if not (low_ok and a <= b <= high):
        bracket = "(" if low_open else "["
        raise ValueError(
            f"{_KEY}{name} must be an increasing pair (lo <= hi) in {bracket}{low}, {high}], got {value!r}"
        )
    return a, b


def _to_rgb(image: np.ndarray, image_format: str) -> np.ndarray:
    if image_format not in _FORMATS:
        raise ValueError(
            f"the r2o_views target supports INPUT.FORMAT {list(_FORMATS)} (3-channel uint8), "
            f"got {image_format!r}"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"r2o_views expects an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    return image[..., ::-1] if image_format == "BGR" else image


@register_target("r2o_views", maps=())
class R2OViews:
    """Builds ``out["r2o_views"]`` (see the module docstring) from ``ctx.original_image``."""

    def __init__(
        self,
        *,
        crop_size: int,
        whole_size: int,
        crop_scale: Sequence[float] = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        flip_prob: float = 0.5,
        color_jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
        color_jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: Sequence[float] = (1.0, 0.1),
        solarize_prob: Sequence[float] = (0.0, 0.2),
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_threshold: int = 128,
        slic_segments: int = 256,
        slic_compactness: float = 20.0,
        slic_cache_dir: str = "",
        superpixels: bool = True,
        memory_cache_entries: int = 4096,
    ):
        """
        Args: as ``MODEL.R2O.VIEWS.*`` (pairs ``blur_prob`` / ``solarize_prob``: view 1, view 2),
        plus ``blur_sigma`` (range), ``solarize_threshold`` (of 255), and
        ``memory_cache_entries``: superpixel maps kept in memory per loader worker (LRU),
        and ``superpixels``: whether to compute them at all.

        Raises:
            ValueError: a value out of range, naming its config key.
        """
        for name, value in (("CROP_SIZE", crop_size), ("WHOLE_SIZE", whole_size)):
            if int(value) != value or value <= 0:
                raise ValueError(f"{_KEY}{name} must be a positive integer, got {value!r}")
        self.crop_size, self.whole_size = int(crop_size), int(whole_size)
        self.crop_scale = _check_pair("CROP_SCALE", crop_scale, 0.0, 1.0, low_open=True)
        self.crop_ratio = _check_pair("CROP_RATIO", crop_ratio, 0.0, math.inf, low_open=True)
        if len(color_jitter) != 4 or min(color_jitter) < 0 or color_jitter[3] > 0.5:
            raise ValueError(
                f"{_KEY}COLOR_JITTER must be (brightness, contrast, saturation, hue), all >= 0 "
                f"and hue <= 0.5, got {tuple(color_jitter)!r}"
            )
        self.color_jitter = tuple(float(x) for x in color_jitter)
        for name, value in (
            ("FLIP_PROB", flip_prob),
            ("COLOR_JITTER_PROB", color_jitter_prob),
            ("GRAYSCALE_PROB", grayscale_prob),
        ):
            _check_prob(name, value)
        for name, pair in (("BLUR_PROB", blur_prob), ("SOLARIZE_PROB", solarize_prob)):
            if len(pair) != 2:
                raise ValueError(f"{_KEY}{name} must be a pair (view 1, view 2), got {pair!r}")
            for value in pair:
                _check_prob(name, value)
        self.flip_prob = float(flip_prob)
        self.color_jitter_prob = float(color_jitter_prob)
        self.grayscale_prob = float(grayscale_prob)
        self.blur_prob = tuple(float(p) for p in blur_prob)
        self.solarize_prob = tuple(float(p) for p in solarize_prob)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_kernel = gaussian_kernel_size(self.crop_size)
        self.solarize_threshold = float(solarize_threshold) / 255.0
        if int(slic_segments) < 1:
            raise ValueError(f"{_KEY}SLIC_SEGMENTS must be >= 1, got {slic_segments!r}")
        if not float(slic_compactness) > 0:
            raise ValueError(f"{_KEY}SLIC_COMPACTNESS must be > 0, got {slic_compactness!r}")
        self.slic_segments, self.slic_compactness = int(slic_segments), float(slic_compactness)
        self.cache = SuperpixelCache(slic_cache_dir, max_entries=memory_cache_entries)
        self.with_superpixels = bool(superpixels)

    @classmethod
    def from_config(cls, cfg, superpixels: Optional[bool] = None) -> "R2OViews":
        """``superpixels`` None: computed unless MODEL.R2O.MODE is "byol" (its training
        does not cluster; SLIC was most of a BYOL loader's time)."""
        v = cfg.MODEL.R2O.VIEWS
        stride = cfg.MODEL.R2O.KMEANS.PAINT_STRIDE
        if cfg.INPUT.FORMAT not in _FORMATS:
            raise ValueError(
                f"INPUT.FORMAT must be one of {list(_FORMATS)} for R2O's views, got {cfg.INPUT.FORMAT!r}"
            )
        if v.WHOLE_SIZE % _WHOLE_DIVISOR:
            raise ValueError(
                f"{_KEY}WHOLE_SIZE must be divisible by {_WHOLE_DIVISOR}, got {v.WHOLE_SIZE}"
            )
        if stride <= 0 or v.WHOLE_SIZE % stride:
            raise ValueError(
                f"{_KEY}WHOLE_SIZE ({v.WHOLE_SIZE}) must be divisible by "
                f"MODEL.R2O.KMEANS.PAINT_STRIDE ({stride}), a positive integer"
            )
        return cls(
            crop_size=v.CROP_SIZE,
            whole_size=v.WHOLE_SIZE,
            crop_scale=v.CROP_SCALE,
            crop_ratio=v.CROP_RATIO,
            flip_prob=v.FLIP_PROB,
            color_jitter=v.COLOR_JITTER,
            color_jitter_prob=v.COLOR_JITTER_PROB,
            grayscale_prob=v.GRAYSCALE_PROB,
            blur_prob=v.BLUR_PROB,
            solarize_prob=v.SOLARIZE_PROB,
            slic_segments=v.SLIC_SEGMENTS,
            slic_compactness=v.SLIC_COMPACTNESS,
            slic_cache_dir=v.SLIC_CACHE_DIR,
            superpixels=cfg.MODEL.R2O.MODE != "byol" if superpixels is None else superpixels,
        )

    # -- one view -------------------------------------------------------------
    def _color_jitter(self, img: torch.Tensor) -> torch.Tensor:
        """(3, S, S) float RGB in [0, 1]; as torchvision's ColorJitter: factors, then a random order."""
        b, c, s, h = self.color_jitter
        ops = []
        for op, strength in ((TF.adjust_brightness, b), (TF.adjust_contrast, c), (TF.adjust_saturation, s)):
            if strength > 0:
                ops.append((op, float(np.random.uniform(max(0.0, 1.0 - strength), 1.0 + strength))))
            else:
                ops.append(None)
        ops.append((TF.adjust_hue, float(np.random.uniform(-h, h))) if h > 0 else None)
        for index in np.random.permutation(4):
            if ops[index] is not None:
                op, factor = ops[index]
                img = op(img, factor)
        return img

    def _view(self, rgb: torch.Tensor, index: int) -> Tuple[torch.Tensor, Tuple[int, int, int, int], bool]:
        """(3, H0, W0) uint8 RGB -> (3, S, S) uint8 RGB view, its (top, left, h, w) crop, its flip."""
        height, width = rgb.shape[1:]
        top, left, h, w = random_resized_crop_params(height, width, self.crop_scale, self.crop_ratio)
        view = TF.resize(
            rgb[:, top : top + h, left : left + w],
            [self.crop_size, self.crop_size],
            interpolation=InterpolationMode.BILINEAR,
            antialias=True,
        )
        flip = bool(np.random.rand() < self.flip_prob)
        if flip:
            view = TF.horizontal_flip(view)
        img = view.float() / 255.0
        if np.random.rand() < self.color_jitter_prob:
            img = self._color_jitter(img)
        if np.random.rand() < self.grayscale_prob:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if np.random.rand() < self.blur_prob[index]:
            sigma = float(np.random.uniform(*self.blur_sigma))
            img = TF.gaussian_blur(img, [self.blur_kernel, self.blur_kernel], [sigma, sigma])
        if np.random.rand() < self.solarize_prob[index]:
            img = torch.where(img >= self.solarize_threshold, 1.0 - img, img)
        view = (img * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        return view, (top, left, h, w), flip

    # -- the target -----------------------------------------------------------
    def superpixels(self, file_name: str, whole_rgb: torch.Tensor) -> torch.Tensor:
        """(3, G, G) uint8 RGB whole image -> (G, G) int64 SLIC labels, cached by file and
        settings (not cached without a file name: nothing identifies the image)."""

        def compute() -> np.ndarray:
            image = np.ascontiguousarray(whole_rgb.permute(1, 2, 0).numpy())
            return slic_superpixels(image, self.slic_segments, self.slic_compactness)

        if not file_name:
            return torch.from_numpy(compute())
        key = self.cache.key(file_name, self.whole_size, self.slic_segments, self.slic_compactness)
        return torch.from_numpy(self.cache.get(key, (self.whole_size, self.whole_size), compute))

    def __call__(self, ctx: TargetContext, out: dict) -> None:
        image_format = ctx.settings.image_format
        rgb_hwc = _to_rgb(ctx.original_image, image_format)
        rgb = torch.from_numpy(np.ascontiguousarray(rgb_hwc.transpose(2, 0, 1)))
        height, width = rgb.shape[1:]
        g = self.whole_size
        whole = TF.resize(rgb, [g, g], interpolation=InterpolationMode.BILINEAR, antialias=True)

        views, boxes, flips = [], [], []
        for index in range(2):
            view, (top, left, h, w), flip = self._view(rgb, index)
            views.append(view)
            sx, sy = g / width, g / height
            boxes.append([left * sx, top * sy, (left + w) * sx, (top + h) * sy])
            flips.append(flip)

        # Channels back to the model's format (a flip of the channel axis, as RGB <-> BGR).
        to_format = (lambda t: t.flip(0).contiguous()) if image_format == "BGR" else (lambda t: t)
        result: Dict[str, torch.Tensor] = {
            "view1": to_format(views[0]),
            "view2": to_format(views[1]),
            "whole": to_format(whole),
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "flips": torch.tensor(flips, dtype=torch.bool),
        }
        if self.with_superpixels:
            result["superpixels"] = self.superpixels(ctx.dataset_dict.get("file_name", ""), whole)
        out["r2o_views"] = result
