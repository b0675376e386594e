"""Registering your own datasets (COCO instances, COCO panoptic, semantic label folders).

Registration never touches the disk; the files are read and validated when the
dataset is first used (``DatasetCatalog.get``). Class names and id maps come
from ``metadata`` when given, otherwise from the json when it is loaded (as
detectron2's ``load_coco_json`` does); either way they are checked against the
json's categories. Registering a name again with the same arguments is a no-op;
with other arguments it is a :class:`DatasetError`.

Example::

    from d2ext.data.datasets import register_coco_instances
    register_coco_instances("my_train", "data/annotations/train.json", "data/images")
"""

from __future__ import annotations

import functools
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from detectron2.data import MetadataCatalog

from .catalog import register_dataset
from .checks import DatasetError
from .loaders import attach_sem_seg_files, load_coco_instances_json, load_coco_panoptic_json
from .loaders import load_sem_seg_folders as load_sem_seg  # validated image / label pairs
from .metadata import instances_metadata, panoptic_metadata, panoptic_separated_metadata
from .validate import read_json

__all__ = [
    "register_coco_instances",
    "register_coco_panoptic",
    "register_coco_panoptic_separated",
    "register_sem_seg",
    "load_coco_instances",
    "load_coco_panoptic",
    "load_coco_panoptic_separated",
    "load_sem_seg",
]

_ID_MAPS = ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id")


def _sync_metadata(dataset_name: Optional[str], derived: Mapping[str, Any], source: str) -> None:
    """Sets what the dataset's metadata lacks from ``derived``; id maps present must agree."""
    if dataset_name is None:
        return
    meta = MetadataCatalog.get(dataset_name)
    # id maps first: a wrong map explains a wrong number of classes
    for key in sorted(derived, key=lambda k: k not in _ID_MAPS):
        value, current = derived[key], meta.get(key)
        if current is None:
            meta.set(**{key: value})
        elif key in _ID_MAPS and {int(k): v for k, v in current.items()} != value:
            raise DatasetError(
                f"{source}: the categories give {key}={value}, but dataset {dataset_name!r} "
                f"was registered with {dict(current)}"
            )
        elif key.endswith("_classes") and len(current) != len(value):
            raise DatasetError(
                f"{source}: the categories give {len(value)} {key}, but dataset "
                f"{dataset_name!r} was registered with {len(current)}: {list(current)}"
            )


def _metadata_get(dataset_name: Optional[str], key: str) -> Any:
    return None if dataset_name is None else MetadataCatalog.get(dataset_name).get(key)


# ---------------------------------------------------------------------------- loaders
def load_coco_instances(
    json_file: str, image_root: str, dataset_name: Optional[str] = None
) -> List[dict]:
    """Validated dataset dicts of a COCO instances json (category ids made contiguous).

    With ``dataset_name``, its metadata's ``thing_dataset_id_to_contiguous_id`` is
    used if registered (and must match the json's categories), else set from them.
    """
    id_map = _metadata_get(dataset_name, "thing_dataset_id_to_contiguous_id")
    dicts, cats = load_coco_instances_json(json_file, image_root, id_map)
    _sync_metadata(dataset_name, instances_metadata(cats), json_file)
    return dicts


def load_coco_panoptic(
    panoptic_json: str,
    panoptic_root: str,
    image_root: str,
    sem_seg_root: Optional[str] = None,
    instances_json: Optional[str] = None,
    dataset_name: Optional[str] = None,
) -> List[dict]:
    """Validated dataset dicts of a COCO panoptic json, non-separated (CONVENTIONS.md).

    Each dict has ``pan_seg_file_name`` and ``segments_info`` (contiguous ids over
    all classes, things first); plus ``sem_seg_file_name`` = sem_seg_root/<png
    name> (all-class contiguous labels) when ``sem_seg_root`` is given, and
    ``annotations`` from ``instances_json`` when given (every panoptic image must
    be in it; its categories must be things of the panoptic json).
    """
    # Registered id maps win (and must agree with the json); else the json's categories.
    thing_map, stuff_map = (_metadata_get(dataset_name, k) for k in _ID_MAPS)
    dicts, cats = load_coco_panoptic_json(
        panoptic_json, panoptic_root, image_root, thing_map, stuff_map
    )
    derived = panoptic_metadata(cats)
    _sync_metadata(dataset_name, derived, panoptic_json)
    if sem_seg_root is not None:
        attach_sem_seg_files(dicts, sem_seg_root, panoptic_json, name_key="pan_seg_file_name")
    if instances_json is not None:
        thing_map = derived["thing_dataset_id_to_contiguous_id"]
        inst_dicts, _ = load_coco_instances_json(instances_json, image_root, thing_map)
        by_id = {d["image_id"]: d for d in inst_dicts}
        for d in dicts:
            if d["image_id"] not in by_id:
                raise DatasetError(
                    f"{instances_json}: has no image id {d['image_id']}, which "
                    f"{panoptic_json} annotates"
                )
            d["annotations"] = by_id[d["image_id"]]["annotations"]
    return dicts


def load_coco_panoptic_separated(
    instances_json: str, image_root: str, sem_seg_root: str, dataset_name: Optional[str] = None
) -> List[dict]:
    """Dataset dicts for Panoptic FPN: ``annotations`` + ``sem_seg_file_name`` (0 = things).

    ``sem_seg_root`` holds one PNG per image, named as the image with ``.png``.
    """
    id_map = _metadata_get(dataset_name, "thing_dataset_id_to_contiguous_id")
    dicts, cats = load_coco_instances_json(instances_json, image_root, id_map)
    if id_map is None:
        _sync_metadata(dataset_name, instances_metadata(cats), instances_json)
    attach_sem_seg_files(dicts, sem_seg_root, instances_json)
    return dicts


# ---------------------------------------------------------------------------- registration
def _path(p: Any, what: str, optional: bool = False) -> Optional[str]:
    if p is None and optional:
        return None
    if not isinstance(p, (str, os.PathLike)) or not os.fspath(p):
        raise DatasetError(f"{what} must be a path, got {p!r}")
    return os.fspath(p)


def _paths(optional: Sequence[str] = (), **paths: Any) -> Dict[str, Optional[str]]:
    """The given paths as strings, in order; DatasetError naming a non-path."""
    return {k: _path(p, k, optional=k in optional) for k, p in paths.items()}


def register_coco_instances(
    name: str, json_file: str, image_root: str, metadata: Optional[Mapping[str, Any]] = None
) -> None:
    """Registers a COCO instances json (detection / instance segmentation); evaluator "coco".

    Args:
        name: dataset name, e.g. "my_train".
        json_file: COCO instances json.
        image_root: folder the json's image ``file_name`` are relative to.
        metadata: extra metadata (e.g. ``thing_classes``, ``thing_colors``).
    """
    paths = _paths(json_file=json_file, image_root=image_root)
    metadata = dict(metadata or {})
    spec = {"type": "coco_instances", **paths, "metadata": metadata}
    loader = functools.partial(load_coco_instances, *paths.values(), name)
    register_dataset(name, spec, loader, {**paths, "evaluator_type": "coco", **metadata})


def _panoptic_meta(paths: Mapping[str, Optional[str]]) -> Dict[str, Any]:
    """The metadata both panoptic flavours set from their paths."""
    meta = {k: paths[k] for k in ("panoptic_json", "panoptic_root", "image_root", "sem_seg_root")}
    meta = {k: v for k, v in meta.items() if v is not None}
    if paths["instances_json"] is not None:
        meta["json_file"] = paths["instances_json"]
    return {**meta, "evaluator_type": "coco_panoptic_seg", "ignore_label": 255}


def register_coco_panoptic(
    name: str,
    panoptic_json: str,
    panoptic_root: str,
    image_root: str,
    sem_seg_root: Optional[str] = None,
    instances_json: Optional[str] = None,
    metadata: Optional[Mapping[str, Any]] = None,
) -> None:
    """Registers a COCO panoptic dataset, non-separated; evaluator "coco_panoptic_seg".

    Args:
        name: dataset name.
        panoptic_json: COCO panoptic json (``images``, ``annotations``, ``categories``).
        panoptic_root: folder of the panoptic PNGs.
        image_root: folder of the images.
        sem_seg_root: optional folder of all-class contiguous label PNGs (named as
            the panoptic PNGs), for semantic targets and mIoU.
        instances_json: optional COCO instances json of the same images, for
            ``annotations`` (instance targets) and mask AP.
        metadata: extra metadata; class names and id maps default to the json's
            categories (things first, see CONVENTIONS.md).
    """
    paths = _paths(
        ("sem_seg_root", "instances_json"),
        panoptic_json=panoptic_json,
        panoptic_root=panoptic_root,
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        instances_json=instances_json,
    )
    metadata = dict(metadata or {})
    spec = {"type": "coco_panoptic", **paths, "metadata": metadata}
    loader = functools.partial(load_coco_panoptic, *paths.values(), name)
    meta = {**_panoptic_meta(paths), "label_divisor": 1000, **metadata}
    register_dataset(name, spec, loader, meta)


def register_coco_panoptic_separated(
    name: str,
    panoptic_json: str,
    panoptic_root: str,
    image_root: str,
    sem_seg_root: str,
    instances_json: str,
    metadata: Optional[Mapping[str, Any]] = None,
) -> None:
    """Registers the separated flavour of a COCO panoptic dataset (Panoptic FPN).

    Dicts carry ``annotations`` (from ``instances_json``) and ``sem_seg_file_name``
    (``sem_seg_root``: 0 = any thing, 1..S = stuff, as detectron2's
    prepare_panoptic_fpn.py writes). ``panoptic_json``/``panoptic_root`` are for
    PQ evaluation. ``metadata`` should hold the separated class names and id maps
    (``metadata.panoptic_separated_metadata(categories)``); without them they are
    read from ``panoptic_json``'s categories when the dataset is loaded.
    """
    paths = _paths(
        panoptic_json=panoptic_json,
        panoptic_root=panoptic_root,
        image_root=image_root,
        sem_seg_root=sem_seg_root,
        instances_json=instances_json,
    )
    metadata = dict(metadata or {})
    spec = {"type": "coco_panoptic_separated", **paths, "metadata": metadata}

    def load() -> List[dict]:
        if MetadataCatalog.get(name).get("stuff_dataset_id_to_contiguous_id") is None:
            cats = read_json(paths["panoptic_json"], ("categories",))["categories"]
            _sync_metadata(name, panoptic_separated_metadata(cats), paths["panoptic_json"])
        return load_coco_panoptic_separated(
            paths["instances_json"], paths["image_root"], paths["sem_seg_root"], name
        )

    register_dataset(name, spec, load, {**_panoptic_meta(paths), **metadata})


def register_sem_seg(
    name: str,
    image_root: str,
    label_root: str,
    classes: Sequence[str],
    ignore_label: int = 255,
    image_ext: str = ".jpg",
    label_ext: str = ".png",
) -> None:
    """Registers a semantic segmentation dataset of image / label-map pairs; evaluator "sem_seg".

    Args:
        name: dataset name.
        image_root: folder of images (searched recursively for ``*image_ext``).
        label_root: folder of label maps with the same relative paths and
            ``label_ext``; pixel value = index into ``classes``, or ``ignore_label``.
        classes: class names, in label-id order.
        ignore_label: the label of unlabeled pixels.
    """
    paths = _paths(image_root=image_root, label_root=label_root)
    if isinstance(classes, str) or not classes or not all(isinstance(c, str) for c in classes):
        raise DatasetError(
            f"dataset {name!r}: classes must be a non-empty list of names, got {classes!r}"
        )
    if not isinstance(ignore_label, int) or isinstance(ignore_label, bool):
        raise DatasetError(f"dataset {name!r}: ignore_label must be an int, got {ignore_label!r}")
    if 0 <= ignore_label < len(classes):
        raise DatasetError(
            f"dataset {name!r}: ignore_label {ignore_label} is also the id of class "
            f"{classes[ignore_label]!r}"
        )
    options = {"classes": list(classes), "ignore_label": ignore_label}
    exts = {"image_ext": image_ext, "label_ext": label_ext}
    spec = {"type": "sem_seg", **paths, **options, **exts}
    loader = functools.partial(load_sem_seg, *paths.values(), *exts.values())
    meta = {
        "stuff_classes": list(classes),
        "ignore_label": ignore_label,
        "evaluator_type": "sem_seg",
        "image_root": paths["image_root"],
        "sem_seg_root": paths["label_root"],
    }
    register_dataset(name, spec, loader, meta)
