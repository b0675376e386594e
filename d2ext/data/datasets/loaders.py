"""Loaders: COCO instances json (detectron2's), COCO panoptic json, semantic label folders.

Each validates its input with ``validate.py`` first, then builds detectron2's
standard dicts (d2ext/data/CONVENTIONS.md), then checks that every referenced
file exists. Paths are local paths (no PathManager URLs).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from detectron2.data.datasets import load_coco_json
from PIL import Image

from .checks import DatasetError
from .metadata import panoptic_metadata
from .validate import (
    COCO_KEYS,
    check_categories,
    check_coco_instances,
    check_coco_panoptic,
    read_json,
    require_files,
)

__all__ = [
    "read_json",
    "load_coco_instances_json",
    "load_coco_panoptic_json",
    "load_sem_seg_folders",
    "attach_sem_seg_files",
    "check_categories",
]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pauses the cyclic GC while a json is parsed and converted.

    Parsing allocates millions of containers, whose allocations keep triggering
    collections that find nothing (json data holds no cycles; refcounting frees it).
    With pycocotools parsing the instances json a second time, this cuts the CPU time
    of ``load_coco_instances_json`` on a 56 MB json from 4.4 s to 2.7 s (the
    single-parse loader it replaced took 2.2 s).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _normalize_annotation(obj: Mapping[str, Any], thing_map: Mapping[int, int]) -> dict:
    """One annotation of ``load_coco_json`` in d2ext's form (CONVENTIONS.md).

    detectron2 keeps the dataset category id (we call it without a dataset name, so
    it never writes to MetadataCatalog: our id map may come from the registration),
    keeps ``iscrowd`` only if present and ``keypoints`` even when empty.
    """
    ann = {
        "id": obj["id"],
        "bbox": list(obj["bbox"]),
        "bbox_mode": obj["bbox_mode"],
        "category_id": thing_map[obj["category_id"]],
        "iscrowd": int(obj.get("iscrowd", 0)),
    }
    for key in ("segmentation", "keypoints"):  # compressed RLE / polygons; keypoints + 0.5
        if obj.get(key):
            ann[key] = obj[key]
    return ann


def load_coco_instances_json(
    json_file: str,
    image_root: str,
    thing_dataset_id_to_contiguous_id: Optional[Mapping[int, int]] = None,
) -> Tuple[List[dict], List[dict]]:
    """Loads a COCO instances json into dataset dicts, validating it.

    Args:
        json_file: the instances json (``images``, ``annotations``, ``categories``).
        image_root: folder the images' ``file_name`` are relative to.
        thing_dataset_id_to_contiguous_id: dataset id -> contiguous id; default:
            the json's category ids in sorted order -> 0..T-1.

    Returns:
        (dicts sorted by image id, the json's categories). Images without
        annotations are kept (detectron2's train loader filters them, with a log).
    """
    with _gc_paused():
        data = read_json(json_file, COCO_KEYS)
        cats = check_categories(data["categories"], json_file)
        thing_map = thing_dataset_id_to_contiguous_id
        if thing_map is None:
            thing_map = {c["id"]: i for i, c in enumerate(sorted(cats, key=lambda c: c["id"]))}
        check_coco_instances(data, json_file, thing_map)
        del data  # pycocotools (inside load_coco_json) parses the file again
        dicts = load_coco_json(json_file, image_root, extra_annotation_keys=["id"])
        for d in dicts:
            d["annotations"] = [_normalize_annotation(a, thing_map) for a in d["annotations"]]
    require_files(dicts, "file_name", "image file", json_file)
    num_empty = sum(1 for d in dicts if not d["annotations"])
    if num_empty:
        logger.info("%s: %d of %d images have no annotations", json_file, num_empty, len(dicts))
    return dicts, cats


def load_coco_panoptic_json(
    panoptic_json: str,
    panoptic_root: str,
    image_root: str,
    thing_dataset_id_to_contiguous_id: Optional[Mapping[int, int]] = None,
    stuff_dataset_id_to_contiguous_id: Optional[Mapping[int, int]] = None,
) -> Tuple[List[dict], List[dict]]:
    """Loads a COCO panoptic json into dataset dicts, validating it.

    ``segments_info[*].category_id`` becomes contiguous: thing ids through the
    thing map (``isthing`` True), others through the stuff map. The maps default
    to ``metadata.panoptic_metadata`` of the json's categories.

    Returns:
        (dicts sorted by image id, the json's categories). Images listed in
        ``images`` without a panoptic annotation are skipped with a warning.
    """
    # Not detectron2's coco_panoptic.load_coco_panoptic_json: 0.6 names every image
    # "<PNG stem>.jpg" (asserting that the first exists, so PNG images such as the toy
    # data's cannot load), int()s the image ids and gives no height / width.
    with _gc_paused():
        data = read_json(panoptic_json, COCO_KEYS)
    cats = check_categories(data["categories"], panoptic_json, panoptic=True)
    thing_map, stuff_map = thing_dataset_id_to_contiguous_id, stuff_dataset_id_to_contiguous_id
    if thing_map is None or stuff_map is None:
        derived = panoptic_metadata(cats)
        thing_map = derived["thing_dataset_id_to_contiguous_id"]
        stuff_map = derived["stuff_dataset_id_to_contiguous_id"]
    images = check_coco_panoptic(data, panoptic_json, thing_map, stuff_map)

    def segment(seg: dict) -> dict:
        thing = seg["category_id"] in thing_map
        category_id = (thing_map if thing else stuff_map)[seg["category_id"]]
        out = dict(seg, isthing=thing, category_id=category_id)
        out.setdefault("iscrowd", 0)
        return out

    dicts = []
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        dicts.append(
            {
                "file_name": os.path.join(image_root, img["file_name"]),
                "height": img["height"],
                "width": img["width"],
                "image_id": ann["image_id"],
                "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
                "segments_info": [segment(s) for s in ann["segments_info"]],
            }
        )
    if len(dicts) < len(images):
        logger.warning(
            "%s: %d of %d images have no panoptic annotation and are skipped",
            panoptic_json,
            len(images) - len(dicts),
            len(images),
        )
    dicts.sort(key=lambda d: d["image_id"])
    require_files(dicts, "file_name", "image file", panoptic_json)
    require_files(dicts, "pan_seg_file_name", "panoptic PNG", panoptic_json)
    logger.info("Loaded %d panoptic images from %s", len(dicts), panoptic_json)
    return dicts, cats


def attach_sem_seg_files(
    dicts: List[dict], sem_seg_root: str, owner: str, name_key: str = "file_name"
) -> None:
    """Adds ``sem_seg_file_name`` = sem_seg_root/<stem of d[name_key]>.png to each dict, checked."""
    for d in dicts:
        stem = os.path.splitext(os.path.basename(d[name_key]))[0]
        d["sem_seg_file_name"] = os.path.join(sem_seg_root, stem + ".png")
    require_files(dicts, "sem_seg_file_name", "semantic label PNG", owner)


def _list_files(root: str, ext: str) -> Dict[str, str]:
    """relative path without extension -> path, for every file under ``root`` ending in ``ext``."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: folder does not exist")
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for f in filenames:
            if f.endswith(ext):
                path = os.path.join(dirpath, f)
                out[os.path.relpath(path, root)[: -len(ext)]] = path
    return out


def _image_hw(path: str) -> Tuple[int, int]:
    """(H, W) as detectron2's read_image returns the image, i.e. after its EXIF rotation."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the image: {e}") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def load_sem_seg_folders(
    image_root: str, label_root: str, image_ext: str = ".jpg", label_ext: str = ".png"
) -> List[dict]:
    """Pairs images and label maps by relative path without extension (searched recursively).

    Every image must have a label file and every label file an image. ``image_id``
    is the relative path without extension; ``height``/``width`` come from the
    image header.
    """
    # Not detectron2's load_sem_seg: it lists only the top folder, silently keeps the
    # intersection when images and labels disagree, and gives no image_id / size.
    image_ext, label_ext = (e if e.startswith(".") else "." + e for e in (image_ext, label_ext))
    images, labels = _list_files(image_root, image_ext), _list_files(label_root, label_ext)
    if not images:
        raise DatasetError(f"{image_root}: no '*{image_ext}' images found")
    for have, lack, what, whats, other, root, ext in (
        (images, labels, "image", "images", "label file", label_root, label_ext),
        (labels, images, "label file", "labels", "image", image_root, image_ext),
    ):
        unpaired = sorted(set(have) - set(lack))
        if unpaired:
            key = unpaired[0]
            raise DatasetError(
                f"{have[key]}: {what} (id {key!r}) has no {other} "
                f"{os.path.join(root, key + ext)} ({len(unpaired)} {whats} lack one)"
            )
    dicts = []
    for key in sorted(images):
        h, w = _image_hw(images[key])
        dicts.append(
            {
                "file_name": images[key],
                "sem_seg_file_name": labels[key],
                "height": h,
                "width": w,
                "image_id": key,
            }
        )
    logger.info("Loaded %d images with semantic labels from %s", len(dicts), image_root)
    return dicts
