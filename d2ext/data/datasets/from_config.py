"""Registering user datasets listed in the config (``cfg.D2EXT.DATASETS``).

Each entry is a dict with ``NAME``, ``TYPE`` and the keys of that type::

    D2EXT:
      DATASETS:
        - {NAME: my_train, TYPE: coco_instances, JSON: data/train.json, IMAGE_ROOT: data/images}
        - {NAME: my_pan, TYPE: coco_panoptic, PANOPTIC_JSON: ..., PANOPTIC_ROOT: ...,
           IMAGE_ROOT: ...,
           SEM_SEG_ROOT: ..., INSTANCES_JSON: ...}          # the last two optional
        - {NAME: my_seg, TYPE: sem_seg, IMAGE_ROOT: ..., LABEL_ROOT: ..., CLASSES: [a, b],
           IGNORE_LABEL: 255, IMAGE_EXT: .jpg, LABEL_EXT: .png}  # the last three optional

The same entries registered again (every process of a distributed run calls
this) are a no-op; another spec under a registered name is an error.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Tuple

from .checks import DatasetError
from .user import register_coco_instances, register_coco_panoptic, register_sem_seg

__all__ = ["register_from_config", "DATASET_TYPES"]


def _path(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _classes(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(c, str) and c for c in value)
    )


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_CHECKS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    **{
        k: (_path, "a path")
        for k in ("JSON", "IMAGE_ROOT", "PANOPTIC_JSON", "PANOPTIC_ROOT", "SEM_SEG_ROOT")
        + ("INSTANCES_JSON", "LABEL_ROOT")
    },
    "CLASSES": (_classes, "a non-empty list of class names"),
    "IGNORE_LABEL": (_int, "an int"),
    "IMAGE_EXT": (_path, "a file extension such as '.jpg'"),
    "LABEL_EXT": (_path, "a file extension such as '.png'"),
}

# TYPE -> (required keys: positional arguments after the name, in order; optional
# keys: the keyword arguments of the same name in lower case; register function)
DATASET_TYPES: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...], Callable[..., None]]] = {
    "coco_instances": (("JSON", "IMAGE_ROOT"), (), register_coco_instances),
    "coco_panoptic": (
        ("PANOPTIC_JSON", "PANOPTIC_ROOT", "IMAGE_ROOT"),
        ("SEM_SEG_ROOT", "INSTANCES_JSON"),
        register_coco_panoptic,
    ),
    "sem_seg": (
        ("IMAGE_ROOT", "LABEL_ROOT", "CLASSES"),
        ("IGNORE_LABEL", "IMAGE_EXT", "LABEL_EXT"),
        register_sem_seg,
    ),
}


def _check_entry(i: int, entry: Any) -> None:
    where = f"D2EXT.DATASETS[{i}]"
    if not isinstance(entry, Mapping):
        raise DatasetError(f"{where} must be a dict with NAME, TYPE, ..., got {entry!r}")
    if not isinstance(entry.get("NAME"), str) or not entry["NAME"]:
        raise DatasetError(f"{where}.NAME is missing or not a non-empty string")
    if "TYPE" not in entry:
        raise DatasetError(f"{where}.TYPE is missing; one of {sorted(DATASET_TYPES)}")
    kind = entry["TYPE"]
    if kind not in DATASET_TYPES:
        raise DatasetError(f"{where}.TYPE: unknown type {kind!r}; one of {sorted(DATASET_TYPES)}")
    required, optional, _ = DATASET_TYPES[kind]
    allowed = ("NAME", "TYPE") + required + optional
    for key in entry:
        if key not in allowed:
            raise DatasetError(
                f"{where}.{key}: unknown key for TYPE {kind!r}; allowed keys: {list(allowed)}"
            )
    for key in required:
        if key not in entry:
            raise DatasetError(f"{where}.{key} is missing; TYPE {kind!r} needs {list(required)}")
    for key in (k for k in required + optional if k in entry):
        check, what = _CHECKS[key]
        if not check(entry[key]):
            raise DatasetError(f"{where}.{key} must be {what}, got {entry[key]!r}")


def _register(entry: Mapping[str, Any]) -> None:
    required, optional, register = DATASET_TYPES[entry["TYPE"]]
    args = [list(entry[k]) if k == "CLASSES" else entry[k] for k in required]
    register(entry["NAME"], *args, **{k.lower(): entry[k] for k in optional if k in entry})


def register_from_config(cfg) -> List[str]:
    """Registers every dataset of ``cfg.D2EXT.DATASETS``; returns their names.

    Raises:
        DatasetError: naming ``D2EXT.DATASETS[i].KEY`` for an unknown TYPE, a
            missing, unknown or ill-typed key, or a NAME already registered
            with another spec.
    """
    entries = cfg.D2EXT.DATASETS
    if not isinstance(entries, (list, tuple)):
        raise DatasetError(f"D2EXT.DATASETS must be a list of dicts, got {entries!r}")
    for i, entry in enumerate(entries):  # check all before registering any
        _check_entry(i, entry)
    for i, entry in enumerate(entries):
        try:
            _register(entry)
        except DatasetError as e:
            raise DatasetError(f"D2EXT.DATASETS[{i}].NAME: {e}") from None
    return [entry["NAME"] for entry in entries]
