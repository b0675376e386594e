"""tools/toy_gallery.py: the overlay on a hand-made panoptic map, and a tiny grid."""

import numpy as np
from PIL import Image

from .conftest import load_tool

toy_gallery = load_tool("toy_gallery")

CATEGORIES = [
    {"id": 1, "name": "rod", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "background", "isthing": 0, "color": [90, 90, 90]},
]


def test_overlay_colours_segments_and_whitens_boundaries():
    image = np.zeros((4, 6, 3), np.uint8)
    pan = np.full((4, 6), 50, np.int64)  # background segment id 50
    pan[:, 1:3] = 7  # thing
    pan[:, 3:5] = 9  # touching thing
    segments = [
        {"id": 7, "category_id": 1},
        {"id": 9, "category_id": 1},
        {"id": 50, "category_id": 2},
    ]
    out = toy_gallery.overlay(image, pan, segments, CATEGORIES)
    alpha = toy_gallery.ALPHA
    # the last column is background, no boundary to its right or below
    assert (out[0, 5] == int(alpha * 90 + 0.5)).all()
    assert (out[:, 0] == 255).all() and (out[:, 2] == 255).all()  # left of each change
    assert not np.array_equal(out[0, 1], out[0, 3])  # touching things get different colours


def test_gallery_grid(tmp_path):
    out = tmp_path / "g.png"
    args = ["--profile", "toy_rods", "--num", "3", "--cols", "2", "--out", str(out)]
    assert toy_gallery.main(args) == 0
    size, gap = 128, toy_gallery.GAP
    picture = np.array(Image.open(out))
    assert picture.shape == (2 * (size + gap) + gap, 2 * (2 * size + 2 * gap) + gap, 3)
