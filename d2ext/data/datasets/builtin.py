"""Builtin dataset names, in detectron2's names and folder layouts under $DETECTRON2_DATASETS.

=====================================  ==========================================
name                                   files (relative to the datasets root)
=====================================  ==========================================
coco_2017_{train,val}                  coco/{train,val}2017,
                                       coco/annotations/instances_{train,val}2017.json
coco_2017_{train,val}_panoptic         + coco/panoptic_{train,val}2017,
                                       coco/annotations/panoptic_{train,val}2017.json,
                                       coco/panoptic_semseg_{train,val}2017 (all-class
                                       contiguous labels, as MaskFormer's
                                       prepare_coco_semantic_annos_from_panoptic_annos.py)
coco_2017_{train,val}_panoptic_separated  + coco/panoptic_stuff_{train,val}2017
                                       (detectron2's prepare_panoptic_fpn.py)
ade20k_sem_seg_{train,val}             ADEChallengeData2016/images/{training,validation},
                                       ADEChallengeData2016/annotations_detectron2/...
                                       (detectron2's prepare_ade20k_sem_seg.py)
toy_*                                  toy/ (generated on first use, see toy.py)
cityscapes names                       see cityscapes.py, when present
=====================================  ==========================================

detectron2 registers some of these names on import with its own loaders; they
are replaced by d2ext's validating loaders. Registration touches no file;
loading a dataset whose files are absent raises a DatasetError naming the
missing path and showing the expected layout.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Callable, List, Optional, Sequence

from detectron2.data.datasets.builtin_meta import (
    ADE20K_SEM_SEG_CATEGORIES,
    COCO_CATEGORIES,
    _get_builtin_metadata,
)

from .catalog import get_datasets_root, register_dataset
from .checks import DatasetError
from .metadata import panoptic_metadata
from .toy import register_toy_datasets
from .user import (
    load_coco_instances,
    load_coco_panoptic,
    load_coco_panoptic_separated,
    load_sem_seg,
)

__all__ = ["register_all_builtin", "BUILTIN_LAYOUTS"]

logger = logging.getLogger(__name__)

# The expected trees, shown when a file is missing.
BUILTIN_LAYOUTS = {
    "coco": """\
coco/
  annotations/
    instances_{train,val}2017.json
    panoptic_{train,val}2017.json        (panoptic names)
  {train,val}2017/                       images (*.jpg)
  panoptic_{train,val}2017/              panoptic PNGs (panoptic names)
  panoptic_semseg_{train,val}2017/       all-class labels (*_panoptic)
  panoptic_stuff_{train,val}2017/        0 = things, 1..53 stuff (*_panoptic_separated)""",
    "ade20k": """\
ADEChallengeData2016/
  images/{training,validation}/          *.jpg
  annotations_detectron2/{training,validation}/   *.png, 0..149, 255 = ignore""",
}


def _load_checked(
    required: Sequence[str], root: str, layout: str, name: str, load: Callable[[], List[dict]]
) -> List[dict]:
    for path in required:
        if not os.path.exists(path):
            tree = "\n".join("  " + line for line in BUILTIN_LAYOUTS[layout].splitlines())
            raise DatasetError(
                f"dataset {name!r} needs {path}, which does not exist. Expected layout under "
                f"the datasets root {root!r} (set $DETECTRON2_DATASETS to change it):\n{tree}"
            )
    return load()


def _register(
    name: str, root: str, layout: str, required: Sequence[str], load: Callable, meta: dict
):
    spec = {"type": f"builtin_{layout}", "name": name, "root": root}
    loader = functools.partial(_load_checked, tuple(required), root, layout, name, load)
    register_dataset(name, spec, loader, meta, replace=True)


def register_all_coco(root: str) -> None:
    instances_meta = _get_builtin_metadata("coco")
    separated_meta = _get_builtin_metadata("coco_panoptic_separated")
    standard_meta = panoptic_metadata(COCO_CATEGORIES)
    for split in ("train", "val"):
        coco = functools.partial(os.path.join, root, "coco")
        image_root, stuff_root = coco(f"{split}2017"), coco(f"panoptic_stuff_{split}2017")
        instances_json = coco("annotations", f"instances_{split}2017.json")
        panoptic_json = coco("annotations", f"panoptic_{split}2017.json")
        panoptic_root = coco(f"panoptic_{split}2017")
        semseg_root = coco(f"panoptic_semseg_{split}2017")
        common = {"json_file": instances_json, "image_root": image_root}
        panoptic = {**common, "panoptic_json": panoptic_json, "panoptic_root": panoptic_root}
        panoptic.update(ignore_label=255, evaluator_type="coco_panoptic_seg")

        name = f"coco_2017_{split}"
        load = functools.partial(load_coco_instances, instances_json, image_root, name)
        meta = {**instances_meta, **common, "evaluator_type": "coco"}
        _register(name, root, "coco", [instances_json, image_root], load, meta)

        name = f"coco_2017_{split}_panoptic"
        paths = [panoptic_json, panoptic_root, image_root, semseg_root, instances_json]
        load = functools.partial(load_coco_panoptic, *paths, name)
        meta = {**standard_meta, **panoptic, "sem_seg_root": semseg_root, "label_divisor": 1000}
        required = [panoptic_json, panoptic_root, semseg_root, instances_json, image_root]
        _register(name, root, "coco", required, load, meta)

        name = f"coco_2017_{split}_panoptic_separated"
        load = functools.partial(
            load_coco_panoptic_separated, instances_json, image_root, stuff_root, name
        )
        meta = {**separated_meta, **panoptic, "sem_seg_root": stuff_root}
        required = [instances_json, image_root, stuff_root, panoptic_json, panoptic_root]
        _register(name, root, "coco", required, load, meta)


def register_all_ade20k(root: str) -> None:
    for split, folder in (("train", "training"), ("val", "validation")):
        image_root = os.path.join(root, "ADEChallengeData2016", "images", folder)
        label_root = os.path.join(root, "ADEChallengeData2016", "annotations_detectron2", folder)
        load = functools.partial(load_sem_seg, image_root, label_root, ".jpg", ".png")
        meta = {
            "stuff_classes": list(ADE20K_SEM_SEG_CATEGORIES),
            "image_root": image_root,
            "sem_seg_root": label_root,
            "ignore_label": 255,
            "evaluator_type": "sem_seg",
        }
        _register(f"ade20k_sem_seg_{split}", root, "ade20k", [image_root, label_root], load, meta)


def register_all_builtin(root: Optional[str] = None) -> None:
    """Registers every builtin name for the datasets root (default: $DETECTRON2_DATASETS).

    Idempotent; touches no file. Calling it with another root re-points the names.
    """
    root = get_datasets_root(root)
    register_all_coco(root)
    register_all_ade20k(root)
    register_toy_datasets(root)
    try:
        from .cityscapes import register_all_cityscapes
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name == f"{__package__}.cityscapes":
            logger.debug("No Cityscapes loaders (%s.cityscapes) to register", __package__)
        else:  # the module is there but cannot be imported: say so, but keep the others usable
            logger.warning("Cityscapes datasets not registered: %s", e)
    else:
        register_all_cityscapes(root)
