#!/usr/bin/env python
"""A PNG grid of a few images of a toy profile, each beside its panoptic overlay.

    python tools/toy_gallery.py --profile toy_rods --num 4 --cols 2 --scale 2 --colors 256 \\
        --out docs/toy_rods.png     # the picture in docs/ (135 KB)

The images are rendered exactly as the dataset generation writes them (same
seed, same index), without generating the dataset. In the overlay each thing
segment gets its own colour (stuff keeps its category colour), blended with the
image, and every segment boundary is white, so touching and occluded objects
show as separate segments.
"""

from __future__ import annotations

import argparse
import colorsys
import logging
import os
import sys
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import d2ext  # noqa: E402,F401  (compat before detectron2)
from d2ext.data.datasets import toy  # noqa: E402
from d2ext.data.datasets.toy_profiles import PROFILES, get_profile  # noqa: E402

logger = logging.getLogger("d2ext.tools.toy_gallery")

ALPHA = 0.55  # weight of the segment colour in the overlay
GAP = 4  # px between tiles, at output scale


def _thing_colors(n: int) -> np.ndarray:
    """(n, 3) float RGB in [0, 255]: hues spaced by the golden ratio, so neighbours differ."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues]).reshape(n, 3) * 255


def overlay(
    image: np.ndarray, panoptic: np.ndarray, segments: List[dict], categories: List[dict]
) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` blended with a colour per segment, boundaries in white."""
    color_of = {c["id"]: np.asarray(c["color"], np.float64) for c in categories}
    isthing = {c["id"]: c["isthing"] for c in categories}
    things = [s for s in segments if isthing[s["category_id"]]]
    palette = _thing_colors(len(things))
    ids = np.array([s["id"] for s in segments] + [0], np.int64)
    thing_rank = {s["id"]: i for i, s in enumerate(things)}
    colors = np.stack(
        [
            palette[thing_rank[s["id"]]] if s["id"] in thing_rank else color_of[s["category_id"]]
            for s in segments
        ]
        + [np.zeros(3)]  # id 0 (unlabelled), should a panoptic PNG have it
    )
    # segment id -> row of ``colors``: a lookup by sorted ids, no loop over pixels
    order = np.argsort(ids)
    rows = order[np.searchsorted(ids[order], panoptic)]
    out = (1 - ALPHA) * image.astype(np.float64) + ALPHA * colors[rows]
    edge = np.zeros(panoptic.shape, bool)
    edge[:, :-1] |= panoptic[:, :-1] != panoptic[:, 1:]
    edge[:-1, :] |= panoptic[:-1, :] != panoptic[1:, :]
    out[edge] = 255
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def gallery(profile: str, split: str, num: int, cols: int, scale: int) -> np.ndarray:
    """(H, W, 3) uint8 grid: ``num`` images of ``split``, each followed by its overlay."""
    prof = get_profile(profile)
    size = prof.image_size * scale
    rows = -(-num // cols)
    tile_w = 2 * size + GAP
    grid = np.full((rows * (size + GAP) + GAP, cols * (tile_w + GAP) + GAP, 3), 255, np.uint8)
    for i in range(num):
        sample = toy.render_toy_image(prof, split, i)
        image = sample["image"]
        shown = overlay(image, sample["panoptic"], sample["segments_info"], prof.categories)
        y, x = GAP + (i // cols) * (size + GAP), GAP + (i % cols) * (tile_w + GAP)
        grid[y : y + size, x : x + size] = image.repeat(scale, 0).repeat(scale, 1)
        grid[y : y + size, x + size + GAP : x + tile_w] = shown.repeat(scale, 0).repeat(scale, 1)
        logger.info("%s %s %d: %d things", prof.name, split, i + 1, len(sample["annotations"]))
    return grid


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="toy_rods", choices=sorted(PROFILES))
    parser.add_argument("--split", default="train", choices=toy.TOY_SPLITS)
    parser.add_argument("--num", type=int, default=4, help="how many images")
    parser.add_argument("--cols", type=int, default=2, help="image/overlay pairs per row")
    parser.add_argument("--scale", type=int, default=1, help="integer upscaling (nearest)")
    parser.add_argument(
        "--colors", type=int, default=0, help="quantize to this many colours (smaller file); 0: no"
    )
    parser.add_argument("--out", required=True, help="output PNG")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.num < 1 or args.cols < 1 or args.scale < 1:
        parser.error("--num, --cols and --scale must be positive")
    picture = Image.fromarray(gallery(args.profile, args.split, args.num, args.cols, args.scale))
    if args.colors:
        picture = picture.quantize(args.colors, method=Image.Quantize.MEDIANCUT, dither=0)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    picture.save(args.out, optimize=True)
    logger.info("Wrote %s (%d KB)", args.out, os.path.getsize(args.out) // 1024)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
