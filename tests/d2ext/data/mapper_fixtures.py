"""A tiny synthetic scene written to disk in every annotation style the mapper reads.

Scene (H, W) = (40, 60), classes: 0 "a", 1 "b" (things), 2 "sky", 3 "ground" (stuff).
Things are polygons; their rasterisation (detectron2's ``polygons_to_bitmask``) is
painted into the panoptic map, so RLE, polygon, panoptic and semantic
annotations describe exactly the same pixels at the original resolution.
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
from panopticapi.utils import id2rgb
from PIL import Image

import d2ext  # noqa: F401  (compat first)
from detectron2.structures import BoxMode, polygons_to_bitmask

H, W = 40, 60
IGNORE = 255
NUM_THINGS = 2
CROWD_CLASS = 1

# (segment id, class, polygon [x0, y0, x1, y1, ...]) of the things; last is a crowd.
THINGS = [
    (11, 0, [8, 5, 23, 5, 23, 18, 16, 18, 16, 12, 8, 12]),  # L shape
    (12, 1, [33, 24, 47, 24, 51, 28, 51, 33, 47, 37, 33, 37, 29, 33, 29, 28]),  # octagon
    (13, 0, [5, 30, 9, 30, 9, 34, 5, 34]),  # small square
]
CROWD = (14, 1, [45, 2, 58, 2, 58, 9, 45, 9])
STUFF = [(21, 2), (22, 3)]  # sky: rows < 20, ground: rows >= 20
VOID = (slice(36, 40), slice(0, 12))  # unlabeled corner


def thing_masks() -> Dict[int, np.ndarray]:
    return {sid: polygons_to_bitmask([np.array(poly, float)], H, W) for sid, _, poly in THINGS + [CROWD]}


def panoptic_ids() -> np.ndarray:
    pan = np.where(np.arange(H)[:, None] < 20, 21, 22) * np.ones((1, W), np.int64)
    for sid, mask in thing_masks().items():
        pan[mask] = sid
    pan[VOID] = 0
    return pan


def segments_info() -> List[dict]:
    pan = panoptic_ids()
    infos = []
    for sid, cls, _ in THINGS + [CROWD]:
        infos.append({"id": sid, "category_id": cls, "iscrowd": int(sid == CROWD[0]), "isthing": True})
    for sid, cls in STUFF:
        infos.append({"id": sid, "category_id": cls, "iscrowd": 0, "isthing": False})
    for info in infos:
        info["area"] = int((pan == info["id"]).sum())
    return infos


def semantic_labels() -> np.ndarray:
    pan = panoptic_ids()
    sem = np.full((H, W), IGNORE, np.uint8)
    for info in segments_info():
        sem[pan == info["id"]] = info["category_id"]
    return sem


def image() -> np.ndarray:
    """(H, W, 3) uint8 RGB: a colour per class plus noise, so resampling shows."""
    rng = np.random.RandomState(0)
    palette = np.array([[200, 30, 30], [30, 200, 30], [40, 80, 220], [120, 90, 40]])
    sem = semantic_labels()
    img = np.where(sem[..., None] == IGNORE, 128, palette[np.minimum(sem, 3)])
    return np.clip(img + rng.randint(-20, 21, size=img.shape), 0, 255).astype(np.uint8)


def _tight_xywh(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def annotations(style: str) -> List[dict]:
    """Instance annotations; ``style``: "rle" or "polygon" (the crowd is always RLE)."""
    masks = thing_masks()
    annos = []
    for sid, cls, poly in THINGS + [CROWD]:
        crowd = sid == CROWD[0]
        if style == "rle" or crowd:
            segm = mask_util.encode(np.asfortranarray(masks[sid].astype(np.uint8)))
            segm["counts"] = segm["counts"].decode("ascii")
        else:
            segm = [list(map(float, poly))]
        annos.append(
            {
                "id": sid,
                "category_id": cls,
                "iscrowd": int(crowd),
                "bbox": _tight_xywh(masks[sid]),
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": segm,
            }
        )
    return annos


def write_scene(root: str) -> Dict[str, str]:
    os.makedirs(root, exist_ok=True)
    paths = {
        "image": os.path.join(root, "img.png"),
        "pan": os.path.join(root, "pan.png"),
        "sem": os.path.join(root, "sem.png"),
    }
    Image.fromarray(image()).save(paths["image"])
    Image.fromarray(id2rgb(panoptic_ids()).astype(np.uint8)).save(paths["pan"])
    Image.fromarray(semantic_labels()).save(paths["sem"])
    return paths


def make_dict(
    paths: Dict[str, str],
    *,
    annos: str = "rle",
    panoptic: bool = True,
    semantic: bool = True,
) -> dict:
    """A detectron2 dataset dict; ``annos`` in {"rle", "polygon", "none"}."""
    d = {"file_name": paths["image"], "height": H, "width": W, "image_id": 1}
    if annos != "none":
        d["annotations"] = annotations(annos)
    if panoptic:
        d["pan_seg_file_name"] = paths["pan"]
        d["segments_info"] = segments_info()
    if semantic:
        d["sem_seg_file_name"] = paths["sem"]
    return d


def tight_box(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> [x0, y0, x1, y1] in detectron2's pixel-edge convention."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
