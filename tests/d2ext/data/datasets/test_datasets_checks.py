"""The per-image checks that need pixel data (used by the common mapper)."""

import numpy as np
import pytest

from d2ext.data.datasets import (
    DatasetError,
    check_label_size,
    check_label_values,
    check_panoptic_png,
)

SEGMENTS = [{"id": 3, "area": 2}, {"id": 70000, "area": 2}]


def test_panoptic_png_that_agrees_passes():
    ids = np.array([[3, 3], [70000, 70000]])
    check_panoptic_png(ids, SEGMENTS, "pan/1.png")
    # void pixels (0) and declared-empty segments are fine
    check_panoptic_png(
        np.array([[3, 0], [70000, 0]]), SEGMENTS + [{"id": 9, "area": 0}], "pan/1.png"
    )


def test_panoptic_png_with_undeclared_segment():
    ids = np.array([[3, 8], [70000, 12]])
    with pytest.raises(
        DatasetError,
        match=r"pan/1.png: .*segment ids \[8, 12\] appear in the PNG but not in segments_info",
    ):
        check_panoptic_png(ids, SEGMENTS, "pan/1.png")


def test_panoptic_png_missing_a_declared_segment():
    ids = np.array([[3, 3], [3, 0]])
    with pytest.raises(
        DatasetError,
        match=r"pan/1.png: .*segment ids \[70000\] are in segments_info but not in the PNG",
    ):
        check_panoptic_png(ids, SEGMENTS, "pan/1.png")


def test_label_size():
    check_label_size(np.zeros((4, 6)), (4, 6), "lbl.png", "img.jpg")
    check_label_size(np.zeros((4, 6, 3)), (4, 6, 3), "lbl.png", "img.jpg")
    with pytest.raises(
        DatasetError,
        match=r"lbl.png: label size 6x4 \(HxW\) differs from the size 4x6 of its image img.jpg",
    ):
        check_label_size(np.zeros((6, 4)), (4, 6), "lbl.png", "img.jpg")


def test_label_values():
    check_label_values(np.array([[0, 1], [255, 2]], np.uint8), 3, 255, "lbl.png")
    check_label_values(np.zeros((0, 0), np.uint8), 3, 255, "lbl.png")
    with pytest.raises(
        DatasetError, match=r"lbl.png: label values \[3, 7\] are neither class ids in \[0, 3\)"
    ):
        check_label_values(np.array([[0, 3], [255, 7]], np.uint8), 3, 255, "lbl.png")
    with pytest.raises(DatasetError, match=r"label values \[-1\]"):
        check_label_values(np.array([[0, -1]]), 3, 255, "lbl.png")
