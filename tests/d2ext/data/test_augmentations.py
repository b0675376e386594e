"""build_augmentations (order, config semantics) and the SSD colour jitter."""
import cv2
import numpy as np
import pytest

import d2ext  # noqa: F401  (compat first)
from detectron2.config import get_cfg as detectron2_get_cfg
from detectron2.data import transforms as T

from d2ext.config import add_d2ext_config
from d2ext.data.augmentations import (
    CategoryAreaCrop,
    ColorAugSSD,
    ColorJitterTransform,
    build_augmentations,
)


def _cfg(**input_keys):
    cfg = detectron2_get_cfg()
    add_d2ext_config(cfg)
    for key, value in input_keys.items():
        node = cfg.INPUT
        *parents, leaf = key.split("__")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, value)
    return cfg


def _types(augs):
    return [type(a) for a in augs]


def test_default_train_is_detectron2s_resize_and_flip():
    augs = build_augmentations(_cfg(), True)
    assert _types(augs) == [T.ResizeShortestEdge, T.RandomFlip]
    assert augs[0].is_range is False and tuple(augs[0].short_edge_length) == (800,)


def test_absolute_crop_after_resize_relative_before():
    absolute = build_augmentations(_cfg(CROP__ENABLED=True, CROP__TYPE="absolute", CROP__SIZE=[8, 8]), True)
    assert _types(absolute) == [T.ResizeShortestEdge, T.RandomCrop, T.RandomFlip]
    relative = build_augmentations(_cfg(CROP__ENABLED=True), True)  # relative_range
    assert _types(relative) == [T.RandomCrop, T.ResizeShortestEdge, T.RandomFlip]


def test_category_area_crop_colour_and_no_flip():
    cfg = _cfg(
        CROP__ENABLED=True, CROP__TYPE="absolute", CROP__SIZE=[8, 8], CROP__SINGLE_CATEGORY_MAX_AREA=0.5,
        COLOR_AUG_SSD=True, RANDOM_FLIP="none", FORMAT="RGB",
    )
    augs = build_augmentations(cfg, True, ignore_label=7)
    assert _types(augs) == [T.ResizeShortestEdge, CategoryAreaCrop, ColorAugSSD]
    assert isinstance(augs[1], T.RandomCrop_CategoryAreaConstraint)
    assert augs[1].single_category_max_area == 0.5 and augs[1].ignored_category == 7
    assert augs[2].img_format == "RGB"


def test_ignore_label_defaults_to_255_without_train_datasets():
    cfg = _cfg(CROP__ENABLED=True, CROP__SINGLE_CATEGORY_MAX_AREA=0.5)
    cfg.DATASETS.TRAIN = ()
    assert build_augmentations(cfg, True)[0].ignored_category == 255


def test_bad_flip_value():
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        build_augmentations(_cfg(RANDOM_FLIP="diagonal"), True)


def test_range_sampling_stays_in_range():
    cfg = _cfg(MIN_SIZE_TRAIN=(20, 30), MIN_SIZE_TRAIN_SAMPLING="range", RANDOM_FLIP="none")
    augs = build_augmentations(cfg, True)
    np.random.seed(0)
    img = np.zeros((40, 60, 3), np.uint8)
    sizes = set()
    for _ in range(40):
        aug_input = T.AugInput(img)
        aug_input.apply_augmentations(augs)
        sizes.add(aug_input.image.shape[0])
    assert sizes <= set(range(20, 31)) and len(sizes) > 3


def test_test_time_is_resize_only():
    augs = build_augmentations(_cfg(MIN_SIZE_TEST=20, MAX_SIZE_TEST=50, COLOR_AUG_SSD=True), False)
    assert _types(augs) == [T.ResizeShortestEdge]
    assert tuple(augs[0].short_edge_length) == (20, 20) and augs[0].max_size == 50


def test_category_area_crop_without_semantic_map_is_a_plain_crop():
    np.random.seed(0)
    crop = CategoryAreaCrop("absolute", (5, 7), 0.5, 255)
    tfm = crop.get_transform(np.zeros((20, 30, 3), np.uint8), None)
    assert isinstance(tfm, T.CropTransform) and (tfm.h, tfm.w) == (5, 7)


# -- colour jitter -------------------------------------------------------------
def _image():
    return np.random.RandomState(1).randint(0, 256, size=(6, 7, 3)).astype(np.uint8)


def test_jitter_identity_and_brightness_contrast():
    img = _image()
    assert np.array_equal(ColorJitterTransform().apply_image(img), img)
    bright = ColorJitterTransform(brightness=20.0).apply_image(img)
    assert np.array_equal(bright, np.clip(img.astype(int) + 20, 0, 255))
    contrast = ColorJitterTransform(contrast=1.5).apply_image(img)
    assert np.array_equal(contrast, np.clip(img * 1.5, 0, 255).astype(np.uint8))


def test_jitter_hue_respects_channel_order():
    red_rgb = np.zeros((2, 2, 3), np.uint8)
    red_rgb[..., 0] = 255
    green_rgb = ColorJitterTransform(hue=60, img_format="RGB").apply_image(red_rgb)  # +120 degrees
    assert (green_rgb[..., 1] == 255).all() and (green_rgb[..., [0, 2]] == 0).all()
    red_bgr = red_rgb[..., ::-1].copy()
    green_bgr = ColorJitterTransform(hue=60, img_format="BGR").apply_image(red_bgr)
    assert np.array_equal(green_bgr, green_rgb[..., ::-1])


def test_jitter_zero_saturation_is_grey():
    grey = ColorJitterTransform(saturation=0.0, img_format="BGR").apply_image(_image())
    assert (grey.max(axis=2).astype(int) - grey.min(axis=2) <= 1).all()
    ref = cv2.cvtColor(_image(), cv2.COLOR_BGR2HSV)[..., 2]
    assert np.abs(grey.max(axis=2).astype(int) - ref).max() <= 1  # V is kept


def test_jitter_leaves_geometry_and_labels():
    tfm = ColorJitterTransform(brightness=10.0, contrast=0.7, saturation=1.3, hue=5)
    coords = np.array([[1.5, 2.0], [3.0, 4.0]])
    assert np.array_equal(tfm.apply_coords(coords.copy()), coords)
    labels = np.arange(42, dtype=np.uint8).reshape(6, 7)
    assert np.array_equal(tfm.apply_segmentation(labels), labels)
    assert np.array_equal(tfm.apply_box(np.array([[0.0, 1.0, 5.0, 6.0]])), [[0.0, 1.0, 5.0, 6.0]])
    assert isinstance(tfm.inverse(), T.NoOpTransform)


def test_grayscale_images_get_brightness_only():
    img = _image()[..., :1]
    out = ColorJitterTransform(brightness=5.0, saturation=2.0, hue=30, img_format="L").apply_image(img)
    assert np.array_equal(out, np.clip(img.astype(int) + 5, 0, 255))


def test_color_aug_ssd_samples_within_ranges():
    aug = ColorAugSSD(img_format="RGB", prob=1.0)
    np.random.seed(0)
    for _ in range(20):
        t = aug.get_transform(_image())
        assert -32 <= t.brightness <= 32 and 0.5 <= t.contrast <= 1.5
        assert 0.5 <= t.saturation <= 1.5 and -18 <= t.hue <= 18
    never = ColorAugSSD(prob=0.0).get_transform(_image())
    assert np.array_equal(never.apply_image(_image()), _image())
