"""The validation pass: checks of annotation json files and of the dicts loaded from them.

detectron2's loaders assume well-formed input: ``load_coco_json`` silently drops
annotations whose image is not in ``images`` or whose polygons all have < 3
points (and silently drops the bad polygons of the others), and fails with a bare
``KeyError`` / ``AssertionError`` on an undeclared category, an ``ignore`` flag or
a repeated annotation id. So the json is checked here first, and the loaded dicts
after: every problem raises :class:`DatasetError` naming the file and the image /
annotation / segment id. Checks that need pixels are in ``checks.py``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any, Dict, List, Mapping, Sequence

from .checks import DatasetError

__all__ = [
    "COCO_KEYS",
    "read_json",
    "check_categories",
    "index_images",
    "check_coco_instances",
    "check_coco_panoptic",
    "require_files",
]

COCO_KEYS = ("images", "annotations", "categories")


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


def index_images(images: Sequence[Any], json_file: str) -> Dict[Any, Dict[str, Any]]:
    """image id -> image entry; each entry needs ``id``, ``file_name``, ``height``, ``width``."""
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


def _check_segmentation(segm: Any, where: str) -> None:
    if isinstance(segm, dict):  # RLE, compressed (str counts) or not (list counts)
        if "counts" not in segm or "size" not in segm:
            raise DatasetError(f"{where}: RLE segmentation needs 'counts' and 'size'")
        return
    if not isinstance(segm, list):
        raise DatasetError(f"{where}: segmentation must be a list of polygons or an RLE dict")
    for j, poly in enumerate(segm):
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            n = len(poly) if isinstance(poly, list) else type(poly).__name__
            raise DatasetError(
                f"{where}: polygon {j} has {n} coordinates; a polygon needs an even number "
                "of coordinates, at least 6 (3 points)"
            )


def check_coco_instances(
    data: Mapping[str, Any], json_file: str, thing_map: Mapping[int, int]
) -> None:
    """Checks every image and annotation of an instances json, so that detectron2 drops none.

    ``data`` must have passed ``read_json(json_file, COCO_KEYS)`` and ``check_categories``;
    ``thing_map`` (dataset id -> contiguous id) must cover every annotated category.
    """
    images = index_images(data["images"], json_file)
    declared = {c["id"] for c in data["categories"]}
    seen_ids = set()
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
        if cat not in thing_map:
            raise DatasetError(
                f"{where}: category_id {cat} is not a thing category of this dataset's metadata "
                f"(ids {sorted(thing_map)})"
            )
        if ann.get("ignore", 0):
            raise DatasetError(f"{where}: 'ignore' annotations are not supported; use iscrowd")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or bbox[2] < 0 or bbox[3] < 0:
            raise DatasetError(
                f"{where}: bbox must be [x, y, width, height] with width, height >= 0, got {bbox}"
            )
        if ann.get("segmentation"):  # [] or absent: a box-only annotation
            _check_segmentation(ann["segmentation"], where)
        # pycocotools indexes annotations by id, and load_coco_json asserts they are unique
        # except in COCO 2014's (min)ival files, whose few repeated ids it tolerates.
        if "id" not in ann:
            raise DatasetError(f"{where}: annotation has no 'id'")
        if ann_id in seen_ids and "minival" not in json_file:
            raise DatasetError(f"{where}: this annotation id appears twice in 'annotations'")
        seen_ids.add(ann_id)


def check_coco_panoptic(
    data: Mapping[str, Any],
    json_file: str,
    thing_map: Mapping[int, int],
    stuff_map: Mapping[int, int],
) -> Dict[Any, Dict[str, Any]]:
    """Checks the annotations and segments of a panoptic json; returns its images by id.

    Every annotation must name a listed image (at most one annotation per image),
    a ``file_name`` and unique segment ids whose categories are declared and in one
    of the id maps (things: ``thing_map``, others: ``stuff_map``).
    """
    images = index_images(data["images"], json_file)
    declared = {c["id"] for c in data["categories"]}
    annotated = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DatasetError(f"{json_file}: annotations[{k}] has no 'image_id'")
        where = f"{json_file}: image id {ann['image_id']}"
        if ann["image_id"] not in images:
            raise DatasetError(f"{where}: annotation refers to an image id that is not in 'images'")
        if ann["image_id"] in annotated:
            raise DatasetError(f"{where}: the image has more than one panoptic annotation")
        annotated.add(ann["image_id"])
        if "file_name" not in ann or not isinstance(ann.get("segments_info"), list):
            raise DatasetError(f"{where}: annotation needs 'file_name' and a list 'segments_info'")
        seen = set()
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
            if cat not in thing_map and cat not in stuff_map:
                raise DatasetError(
                    f"{where}, segment id {seg_id}: category_id {cat} is in neither id map of "
                    "this dataset's metadata"
                )
    return images


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


def require_files(dicts: Sequence[Mapping[str, Any]], key: str, what: str, owner: str) -> None:
    """Raises DatasetError for the first dict whose ``d[key]`` file is missing.

    The message reads "<owner>: image id <id>: <what> <path> does not exist".
    """
    paths = [d[key] for d in dicts]
    missing = _missing_files(paths)
    if not missing:
        return
    i = missing[0]
    folder = os.path.dirname(paths[i]) or "."
    reason = "does not exist" if os.path.isdir(folder) else f"does not exist (no folder {folder})"
    more = len(missing) - 1
    more = f" ({more} more {what}s of this dataset are missing too)" if more else ""
    raise DatasetError(
        f"{owner}: image id {dicts[i]['image_id']}: {what} {paths[i]} {reason}{more}"
    )
