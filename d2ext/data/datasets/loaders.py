"""Validating loaders: COCO instances json, COCO panoptic json, semantic label folders.

They return detectron2's standard dataset dicts (see d2ext/data/CONVENTIONS.md)
and check, in one pass over the annotations, everything the annotation files
alone can tell: readable json with the required keys, every referenced image
and label file present, every category id declared, every polygon valid.
Anything wrong raises :class:`DatasetError` naming the file and the image /
annotation / segment id. Checks that need pixels live in ``checks.py``.

Paths are local paths (no PathManager URLs).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import pycocotools.mask as mask_util
from detectron2.structures import BoxMode
from PIL import Image

from .checks import DatasetError
from .metadata import panoptic_metadata

__all__ = [
    "read_json",
    "load_coco_instances_json",
    "load_coco_panoptic_json",
    "load_sem_seg_folders",
    "attach_sem_seg_files",
    "check_categories",
]

logger = logging.getLogger(__name__)

INSTANCES_KEYS = ("images", "annotations", "categories")
PANOPTIC_KEYS = ("images", "annotations", "categories")


# ---------------------------------------------------------------------------- json + files
def read_json(path: str, required_keys: Sequence[str] = ()) -> Dict[str, Any]:
    """Reads a json object; DatasetError if unreadable, malformed or missing a required list."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file does not exist") from None
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the file: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a JSON object at the top level, got {type(data).__name__}"
        )
    missing = [k for k in required_keys if k not in data]
    if missing:
        raise DatasetError(
            f"{path}: missing required top-level key(s) {missing} (a COCO-format file has "
            f"{list(required_keys)})"
        )
    for k in required_keys:
        if not isinstance(data[k], list):
            raise DatasetError(
                f"{path}: top-level key {k!r} must be a list, got {type(data[k]).__name__}"
            )
    return data


def _missing_files(paths: Sequence[str]) -> List[int]:
    """Indices of ``paths`` that do not exist; lists each folder once instead of a stat per file."""
    by_dir: Dict[str, List[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        by_dir[os.path.dirname(p)].append(i)
    missing: List[int] = []
    for folder, indices in by_dir.items():
        try:
            names = set(os.listdir(folder or "."))
        except OSError:
            names = set()
        missing.extend(i for i in indices if os.path.basename(paths[i]) not in names)
    return sorted(missing)


def require_files(paths: Sequence[str], owner: Callable[[int], str], what: str) -> None:
    """Raises DatasetError for the first missing path; ``owner(i)`` says who refers to path i."""
    missing = _missing_files(paths)
    if not missing:
        return
    i = missing[0]
    folder = os.path.dirname(paths[i]) or "."
    reason = "does not exist" if os.path.isdir(folder) else f"does not exist (no folder {folder})"
    more = (
        f" ({len(missing) - 1} more {what}s of this dataset are missing too)"
        if len(missing) > 1
        else ""
    )
    raise DatasetError(f"{owner(i)}: {what} {paths[i]} {reason}{more}")


def _index_images(images: Sequence[Any], json_file: str) -> Dict[Any, Dict[str, Any]]:
    by_id: Dict[Any, Dict[str, Any]] = {}
    for k, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img:
            raise DatasetError(f"{json_file}: images[{k}] has no 'id'")
        for key in ("file_name", "height", "width"):
            if key not in img:
                raise DatasetError(f"{json_file}: image id {img['id']} has no {key!r}")
        if img["id"] in by_id:
            raise DatasetError(f"{json_file}: image id {img['id']} appears twice in 'images'")
        by_id[img["id"]] = img
    return by_id


def check_categories(
    categories: Sequence[Any], json_file: str, panoptic: bool = False
) -> List[dict]:
    """Checks that categories have unique ids and names (and ``isthing`` for panoptic)."""
    seen = set()
    for k, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"{json_file}: categories[{k}] needs an 'id' and a 'name'")
        if panoptic and "isthing" not in cat:
            raise DatasetError(f"{json_file}: category id {cat['id']} has no 'isthing'")
        if cat["id"] in seen:
            raise DatasetError(
                f"{json_file}: category id {cat['id']} appears twice in 'categories'"
            )
        seen.add(cat["id"])
    return list(categories)


# ---------------------------------------------------------------------------- instances
def _convert_segmentation(segm: Any, where: str) -> Any:
    if isinstance(segm, dict):  # RLE
        if "counts" not in segm or "size" not in segm:
            raise DatasetError(f"{where}: RLE segmentation needs 'counts' and 'size'")
        if isinstance(segm["counts"], list):  # uncompressed RLE (COCO crowd regions)
            return mask_util.frPyObjects(segm, *segm["size"])
        return segm
    if not isinstance(segm, list):
        raise DatasetError(f"{where}: segmentation must be a list of polygons or an RLE dict")
    for j, poly in enumerate(segm):
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            n = len(poly) if isinstance(poly, list) else type(poly).__name__
            raise DatasetError(
                f"{where}: polygon {j} has {n} coordinates; a polygon needs an even number "
                "of coordinates, at least 6 (3 points)"
            )
    return segm


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
    t0 = time.perf_counter()
    data = read_json(json_file, INSTANCES_KEYS)
    cats = check_categories(data["categories"], json_file)
    if thing_dataset_id_to_contiguous_id is None:
        thing_dataset_id_to_contiguous_id = {
            c["id"]: i for i, c in enumerate(sorted(cats, key=lambda c: c["id"]))
        }
    id_map = thing_dataset_id_to_contiguous_id
    declared = {c["id"] for c in cats}
    images = _index_images(data["images"], json_file)

    objs_per_image: Dict[Any, List[dict]] = defaultdict(list)
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DatasetError(f"{json_file}: annotations[{k}] is not an object")
        ann_id = ann.get("id", f"#{k}")
        where = f"{json_file}: annotation id {ann_id} (image id {ann.get('image_id')})"
        if ann.get("image_id") not in images:
            raise DatasetError(f"{where}: its image id is not in 'images'")
        cat = ann.get("category_id")
        if cat not in declared:
            raise DatasetError(
                f"{where}: category_id {cat} is not in 'categories' (ids {sorted(declared)})"
            )
        if cat not in id_map:
            raise DatasetError(
                f"{where}: category_id {cat} is not a thing category of this dataset's metadata "
                f"(ids {sorted(id_map)})"
            )
        if ann.get("ignore", 0):
            raise DatasetError(f"{where}: 'ignore' annotations are not supported; use iscrowd")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
            raise DatasetError(
                f"{where}: bbox must be [x, y, width, height] with width, height >= 0, got {bbox}"
            )
        obj = {
            "id": ann_id,
            "bbox": list(bbox),
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": id_map[cat],
            "iscrowd": int(ann.get("iscrowd", 0)),
        }
        segm = ann.get("segmentation")
        if segm:  # [] or missing: a box-only annotation, as in detectron2
            obj["segmentation"] = _convert_segmentation(segm, where)
        keypoints = ann.get("keypoints")
        if keypoints:
            # COCO keypoints are pixel indices; detectron2 uses pixel-center coordinates.
            obj["keypoints"] = [v + 0.5 if i % 3 != 2 else v for i, v in enumerate(keypoints)]
        objs_per_image[ann["image_id"]].append(obj)

    img_ids = sorted(images)
    dicts = [
        {
            "file_name": os.path.join(image_root, images[i]["file_name"]),
            "height": images[i]["height"],
            "width": images[i]["width"],
            "image_id": i,
            "annotations": objs_per_image.get(i, []),
        }
        for i in img_ids
    ]
    require_files(
        [d["file_name"] for d in dicts],
        lambda n: f"{json_file}: image id {dicts[n]['image_id']}",
        "image file",
    )
    num_empty = sum(1 for d in dicts if not d["annotations"])
    if num_empty:
        logger.info(
            "%s: %d of %d images have no annotations (kept; detectron2's training loader "
            "skips them when DATALOADER.FILTER_EMPTY_ANNOTATIONS is on)",
            json_file,
            num_empty,
            len(dicts),
        )
    logger.info(
        "Loaded %d images, %d annotations from %s in %.2f s",
        len(dicts),
        len(data["annotations"]),
        json_file,
        time.perf_counter() - t0,
    )
    return dicts, cats


# ---------------------------------------------------------------------------- panoptic
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
    t0 = time.perf_counter()
    data = read_json(panoptic_json, PANOPTIC_KEYS)
    cats = check_categories(data["categories"], panoptic_json, panoptic=True)
    declared = {c["id"] for c in cats}
    images = _index_images(data["images"], panoptic_json)
    if thing_dataset_id_to_contiguous_id is None or stuff_dataset_id_to_contiguous_id is None:
        derived = panoptic_metadata(cats)
        thing_dataset_id_to_contiguous_id = derived["thing_dataset_id_to_contiguous_id"]
        stuff_dataset_id_to_contiguous_id = derived["stuff_dataset_id_to_contiguous_id"]
    thing_map, stuff_map = thing_dataset_id_to_contiguous_id, stuff_dataset_id_to_contiguous_id

    dicts: List[dict] = []
    annotated = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DatasetError(f"{panoptic_json}: annotations[{k}] has no 'image_id'")
        image_id = ann["image_id"]
        where = f"{panoptic_json}: image id {image_id}"
        if image_id not in images:
            raise DatasetError(f"{where}: annotation refers to an image id that is not in 'images'")
        if image_id in annotated:
            raise DatasetError(f"{where}: the image has more than one panoptic annotation")
        annotated.add(image_id)
        if "file_name" not in ann or not isinstance(ann.get("segments_info"), list):
            raise DatasetError(f"{where}: annotation needs 'file_name' and a list 'segments_info'")
        segments, seen = [], set()
        for j, seg in enumerate(ann["segments_info"]):
            if not isinstance(seg, dict):
                raise DatasetError(f"{where}: segments_info[{j}] is not an object")
            seg_id, cat = seg.get("id"), seg.get("category_id")
            if seg_id is None or seg_id in seen:
                raise DatasetError(
                    f"{where}: segment id {seg_id} is missing or repeated in segments_info"
                )
            seen.add(seg_id)
            if cat not in declared:
                raise DatasetError(
                    f"{where}, segment id {seg_id}: category_id {cat} is not in 'categories' "
                    f"(ids {sorted(declared)})"
                )
            seg = dict(seg)
            seg["isthing"] = cat in thing_map
            if seg["isthing"]:
                seg["category_id"] = thing_map[cat]
            elif cat in stuff_map:
                seg["category_id"] = stuff_map[cat]
            else:
                raise DatasetError(
                    f"{where}, segment id {seg_id}: category_id {cat} is in neither id map of "
                    "this dataset's metadata"
                )
            seg.setdefault("iscrowd", 0)
            segments.append(seg)
        img = images[image_id]
        dicts.append(
            {
                "file_name": os.path.join(image_root, img["file_name"]),
                "height": img["height"],
                "width": img["width"],
                "image_id": image_id,
                "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
                "segments_info": segments,
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
    for key, what in (("file_name", "image file"), ("pan_seg_file_name", "panoptic PNG")):
        require_files(
            [d[key] for d in dicts],
            lambda n: f"{panoptic_json}: image id {dicts[n]['image_id']}",
            what,
        )
    logger.info(
        "Loaded %d panoptic images from %s in %.2f s",
        len(dicts),
        panoptic_json,
        time.perf_counter() - t0,
    )
    return dicts, cats


def attach_sem_seg_files(
    dicts: List[dict], sem_seg_root: str, owner: str, name_key: str = "file_name"
) -> None:
    """Adds ``sem_seg_file_name`` = sem_seg_root/<stem of d[name_key]>.png to each dict, checked."""
    for d in dicts:
        stem = os.path.splitext(os.path.basename(d[name_key]))[0]
        d["sem_seg_file_name"] = os.path.join(sem_seg_root, stem + ".png")
    require_files(
        [d["sem_seg_file_name"] for d in dicts],
        lambda n: f"{owner}: image id {dicts[n]['image_id']}",
        "semantic label PNG",
    )


# ---------------------------------------------------------------------------- semantic
def _normalize_ext(ext: str) -> str:
    return ext if ext.startswith(".") else "." + ext


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
    t0 = time.perf_counter()
    image_ext, label_ext = _normalize_ext(image_ext), _normalize_ext(label_ext)
    images = _list_files(image_root, image_ext)
    labels = _list_files(label_root, label_ext)
    if not images:
        raise DatasetError(f"{image_root}: no '*{image_ext}' images found")
    no_label = sorted(set(images) - set(labels))
    if no_label:
        raise DatasetError(
            f"{images[no_label[0]]}: image (id {no_label[0]!r}) has no label file "
            f"{os.path.join(label_root, no_label[0] + label_ext)} ({len(no_label)} images lack one)"
        )
    no_image = sorted(set(labels) - set(images))
    if no_image:
        raise DatasetError(
            f"{labels[no_image[0]]}: label file (id {no_image[0]!r}) has no image "
            f"{os.path.join(image_root, no_image[0] + image_ext)} ({len(no_image)} labels lack one)"
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
    logger.info(
        "Loaded %d images with semantic labels from %s in %.2f s",
        len(dicts),
        image_root,
        time.perf_counter() - t0,
    )
    return dicts
