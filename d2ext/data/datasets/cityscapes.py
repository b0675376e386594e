"""Cityscapes (fine annotations) on cityscapesscripts' label definitions.

detectron2's names and layout, under ``<root>/cityscapes/``::

    leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_{instanceIds,labelIds,labelTrainIds}.png
    gtFine/cityscapes_panoptic_{split}.json       (cityscapesscripts' createPanopticImgs)
    gtFine/cityscapes_panoptic_{split}/<city>_<seq>_<frame>_gtFine_panoptic.png

Registered names (``register_all_cityscapes``):

- ``cityscapes_fine_instance_seg_{train,val,test}``: the 8 evaluated thing classes
  from ``*_instanceIds.png`` as RLE masks; evaluator "cityscapes_instance".
- ``cityscapes_fine_sem_seg_{train,val,test}``: the 19 trainId classes from
  ``*_labelTrainIds.png`` (255 = ignore); evaluator "cityscapes_sem_seg".
- ``cityscapes_fine_panoptic_{train,val}``: non-separated, one contiguous id space
  over the 19 classes (contiguous id = trainId); also ``sem_seg_file_name``;
  evaluator "cityscapes_panoptic_seg".

Registering never touches the disk; loading checks the layout and raises
``CityscapesLayoutError`` (a DatasetError and FileNotFoundError) naming what is missing.

Why not detectron2 0.6's loaders (``detectron2.data.datasets.cityscapes`` /
``cityscapes_panoptic``): they assert that the first image has a
``gtFine_polygons.json`` (and read one per image for the semantic sizes), assert
on any other file in a city folder, and check only the first image's files. The
instance dicts lose the instanceIds value (our ``id``), drop objects one pixel
wide or tall, use the file name as ``image_id`` and XYXY boxes, and start a
process pool. The panoptic sem_seg path is cut at the first "." of the whole
path, and segments get no ``isthing`` and the images no size.
"""
from __future__ import annotations

import functools
import glob
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np
import pycocotools.mask as mask_util
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from detectron2.structures import BoxMode
from PIL import Image

from .catalog import register_dataset
from .checks import DatasetError
from .validate import read_json

logger = logging.getLogger(__name__)

__all__ = [
    "CityscapesLayoutError",
    "CITYSCAPES_THING_LABELS",
    "CITYSCAPES_TRAIN_LABELS",
    "load_cityscapes_instances",
    "load_cityscapes_semantic",
    "load_cityscapes_panoptic",
    "register_cityscapes_instances",
    "register_cityscapes_semantic",
    "register_cityscapes_panoptic",
    "register_all_cityscapes",
]

# The classes Cityscapes evaluates: 19 with a trainId (in trainId order, which is
# also label-id order), 8 of them with instances.
CITYSCAPES_TRAIN_LABELS = sorted(
    (l for l in _CS_LABELS if not l.ignoreInEval and 0 <= l.trainId < 255), key=lambda l: l.trainId
)
CITYSCAPES_THING_LABELS = [l for l in CITYSCAPES_TRAIN_LABELS if l.hasInstances]
# Every instanceIds value below this is a stuff label (thing ids are >= 24).
_FIRST_THING_LABEL_ID = min(l.id for l in _CS_LABELS if l.hasInstances)
_THING_LABEL_ID_TO_CONTIGUOUS = {l.id: i for i, l in enumerate(CITYSCAPES_THING_LABELS)}
_LABEL_ID_TO_TRAIN_ID = {l.id: l.trainId for l in CITYSCAPES_TRAIN_LABELS}

IGNORE_LABEL = 255

_LAYOUT = (
    "expected Cityscapes layout under <root>/cityscapes/: "
    "leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png, "
    "gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_{instanceIds,labelIds,labelTrainIds}.png "
    "(labelTrainIds from cityscapesscripts' createTrainIdLabelImgs), and for panoptic "
    "gtFine/cityscapes_panoptic_<split>.json + gtFine/cityscapes_panoptic_<split>/ "
    "(cityscapesscripts' createPanopticImgs); <root> is $DETECTRON2_DATASETS (default ./datasets)"
)

_IMAGE_SUFFIX = "_leftImg8bit.png"


class CityscapesLayoutError(DatasetError, FileNotFoundError):
    """A file or folder of the Cityscapes layout is missing."""


def _missing(path: str, what: str) -> CityscapesLayoutError:
    return CityscapesLayoutError(f"Cityscapes {what} not found: {path}; {_LAYOUT}")


def _core_name(path: str) -> str:
    """'<city>_<seq>_<frame>', the part shared by all files of one Cityscapes image."""
    return "_".join(os.path.basename(path).split("_")[:3])


def _list_images(image_dir: str) -> List[Tuple[str, str, str]]:
    """(city, core name, image file) of every image under image_dir, sorted."""
    if not os.path.isdir(image_dir):
        raise _missing(image_dir, "image directory")
    files = sorted(glob.glob(os.path.join(image_dir, "*", "*" + _IMAGE_SUFFIX)))
    if not files:
        raise _missing(os.path.join(image_dir, "<city>", "*" + _IMAGE_SUFFIX), "images")
    return [(os.path.basename(os.path.dirname(f)), _core_name(f), f) for f in files]


def _gt_files(image_dir: str, gt_dir: str, suffix: str) -> List[Tuple[str, str, str]]:
    """(core name, image file, gt file) for every image; raises naming missing gt files."""
    out, missing = [], []
    for city, core, image_file in _list_images(image_dir):
        gt_file = os.path.join(gt_dir, city, f"{core}_gtFine_{suffix}.png")
        if not os.path.isfile(gt_file):
            missing.append(gt_file)
        out.append((core, image_file, gt_file))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _missing(missing[0] + more, f"gtFine {suffix} file")
    return out


def _parallel_map(fn: Callable, items: list) -> list:
    # Decoding PNGs and numpy comparisons release the GIL; threads keep order and
    # avoid pickling dicts back from worker processes.
    if len(items) < 16:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def _instance_annotations(instance_ids: np.ndarray) -> List[dict]:
    """Annotations of the evaluated thing classes in one (H, W) instanceIds array.

    Values >= 1000 are label_id * 1000 + k (one object); thing values < 1000 are
    the label id itself, a crowd ("group") region.
    """
    annos = []
    for inst_id in np.unique(instance_ids[instance_ids >= _FIRST_THING_LABEL_ID]):
        inst_id = int(inst_id)
        label_id = inst_id // 1000 if inst_id >= 1000 else inst_id
        if label_id not in _THING_LABEL_ID_TO_CONTIGUOUS:  # caravan, trailer: not evaluated
            continue
        mask = instance_ids == inst_id
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        x0, y0 = int(cols[0]), int(rows[0])
        rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
        rle["counts"] = rle["counts"].decode("ascii")
        annos.append(
            {
                "id": inst_id,
                "category_id": _THING_LABEL_ID_TO_CONTIGUOUS[label_id],
                "iscrowd": int(inst_id < 1000),
                "bbox": [x0, y0, int(cols[-1]) - x0 + 1, int(rows[-1]) - y0 + 1],
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": rle,
            }
        )
    return annos


def load_cityscapes_instances(image_dir: str, gt_dir: str) -> List[dict]:
    """Instance dicts from ``*_gtFine_instanceIds.png``.

    Args:
        image_dir: e.g. "<root>/cityscapes/leftImg8bit/val".
        gt_dir: e.g. "<root>/cityscapes/gtFine/val".

    Returns:
        detectron2 standard dicts; ``annotations`` carry RLE masks (use
        ``INPUT.MASK_FORMAT = "bitmask"``), contiguous ``category_id`` over the 8
        thing classes, and ``iscrowd`` = 1 for group regions.
    """
    files = _gt_files(image_dir, gt_dir, "instanceIds")
    logger.info("Loading %d Cityscapes instance annotations from %s ...", len(files), gt_dir)

    def load(item):
        core, image_file, gt_file = item
        ids = np.asarray(Image.open(gt_file))
        return {
            "file_name": image_file,
            "image_id": core,
            "height": int(ids.shape[0]),
            "width": int(ids.shape[1]),
            "annotations": _instance_annotations(ids),
        }

    dicts = _parallel_map(load, files)
    num = sum(len(d["annotations"]) for d in dicts)
    logger.info("Loaded %d images with %d instances from %s", len(dicts), num, image_dir)
    return dicts


def load_cityscapes_semantic(image_dir: str, gt_dir: str) -> List[dict]:
    """Semantic dicts: ``sem_seg_file_name`` is ``*_gtFine_labelTrainIds.png`` (255 = ignore)."""
    dicts = []
    for core, image_file, gt_file in _gt_files(image_dir, gt_dir, "labelTrainIds"):
        with Image.open(gt_file) as img:  # reads the header only
            width, height = img.size
        dicts.append(
            {
                "file_name": image_file,
                "image_id": core,
                "height": height,
                "width": width,
                "sem_seg_file_name": gt_file,
            }
        )
    logger.info("Loaded %d Cityscapes semantic images from %s", len(dicts), image_dir)
    return dicts


def _segment(seg: Mapping[str, Any]) -> dict:
    """A createPanopticImgs segment with its contiguous id (= trainId) and ``isthing``."""
    return {
        "id": int(seg["id"]),
        "category_id": _LABEL_ID_TO_TRAIN_ID[seg["category_id"]],
        "iscrowd": int(seg.get("iscrowd", 0)),
        "isthing": seg["category_id"] in _THING_LABEL_ID_TO_CONTIGUOUS,
        "area": int(seg["area"]),
        "bbox": list(seg["bbox"]),
    }


def load_cityscapes_panoptic(
    image_dir: str, gt_dir: str, panoptic_root: str, panoptic_json: str
) -> List[dict]:
    """Panoptic dicts from cityscapesscripts' createPanopticImgs output (label-id categories).

    ``segments_info[*]["category_id"]`` becomes the contiguous id (= trainId) over
    the 19 classes, with ``isthing``; ``sem_seg_file_name`` is the labelTrainIds PNG.
    """
    if not os.path.isfile(panoptic_json):
        raise _missing(panoptic_json, "panoptic json")
    if not os.path.isdir(panoptic_root):
        raise _missing(panoptic_root, "panoptic PNG directory")
    info = read_json(panoptic_json, ("annotations",))
    sizes = {img["id"]: (img["height"], img["width"]) for img in info.get("images", [])}
    by_core = {core: image_file for _, core, image_file in _list_images(image_dir)}
    dicts = []
    for ann in info["annotations"]:
        core = ann["image_id"]
        if core not in by_core:
            raise _missing(os.path.join(image_dir, "<city>", core + _IMAGE_SUFFIX), "image")
        city = os.path.basename(os.path.dirname(by_core[core]))
        pan_file = os.path.join(panoptic_root, ann["file_name"])
        sem_file = os.path.join(gt_dir, city, f"{core}_gtFine_labelTrainIds.png")
        for path, what in ((pan_file, "panoptic PNG"), (sem_file, "gtFine labelTrainIds file")):
            if not os.path.isfile(path):
                raise _missing(path, what)
        if core not in sizes:  # the json of createPanopticImgs lists them; read the PNG if not
            with Image.open(pan_file) as img:
                sizes[core] = img.size[::-1]
        dicts.append(
            {
                "file_name": by_core[core],
                "image_id": core,
                "height": int(sizes[core][0]),
                "width": int(sizes[core][1]),
                "pan_seg_file_name": pan_file,
                "segments_info": [_segment(s) for s in ann["segments_info"]],
                "sem_seg_file_name": sem_file,
            }
        )
    if not dicts:
        raise _missing(panoptic_json + " (no annotations)", "panoptic annotations")
    logger.info("Loaded %d Cityscapes panoptic images from %s", len(dicts), panoptic_json)
    return dicts


# ---------------------------------------------------------------- registration
_NAMES = [l.name for l in CITYSCAPES_TRAIN_LABELS]
_COLORS = [l.color for l in CITYSCAPES_TRAIN_LABELS]


def _register(name: str, kind: str, load: Callable, paths: Dict[str, str], **metadata) -> None:
    spec = {"kind": kind, **paths}
    loader = functools.partial(load, *paths.values())
    # replace=True: these names are detectron2's builtin ones, registered on its import.
    register_dataset(name, spec, loader, metadata, replace=True)


def register_cityscapes_instances(name: str, image_dir: str, gt_dir: str) -> None:
    """Registers ``load_cityscapes_instances(image_dir, gt_dir)`` as ``name``
    (evaluator "cityscapes_instance"; metadata ``gt_dir`` for the evaluator)."""
    _register(
        name,
        "cityscapes_instances",
        load_cityscapes_instances,
        {"image_dir": image_dir, "gt_dir": gt_dir},
        thing_classes=[l.name for l in CITYSCAPES_THING_LABELS],
        thing_colors=[l.color for l in CITYSCAPES_THING_LABELS],
        stuff_classes=_NAMES,
        stuff_colors=_COLORS,
        thing_dataset_id_to_contiguous_id=dict(_THING_LABEL_ID_TO_CONTIGUOUS),
        image_root=image_dir,
        gt_dir=gt_dir,
        evaluator_type="cityscapes_instance",
    )


def register_cityscapes_semantic(name: str, image_dir: str, gt_dir: str) -> None:
    """Registers ``load_cityscapes_semantic(image_dir, gt_dir)`` as ``name``
    (19 trainId classes, ignore 255; evaluator "cityscapes_sem_seg")."""
    _register(
        name,
        "cityscapes_semantic",
        load_cityscapes_semantic,
        {"image_dir": image_dir, "gt_dir": gt_dir},
        stuff_classes=_NAMES,
        stuff_colors=_COLORS,
        stuff_dataset_id_to_contiguous_id=dict(_LABEL_ID_TO_TRAIN_ID),
        ignore_label=IGNORE_LABEL,
        image_root=image_dir,
        sem_seg_root=gt_dir,
        gt_dir=gt_dir,
        evaluator_type="cityscapes_sem_seg",
    )


def register_cityscapes_panoptic(
    name: str, image_dir: str, gt_dir: str, panoptic_root: str, panoptic_json: str
) -> None:
    """Registers ``load_cityscapes_panoptic(...)`` as ``name`` (evaluator
    "cityscapes_panoptic_seg": PQ on panoptic_json, Cityscapes AP / IoU on gt_dir)."""
    # As detectron2's registration: thing_* and stuff_* both list all 19 classes,
    # indexed by the contiguous id (= trainId); the id maps split things from stuff.
    paths = {"image_dir": image_dir, "gt_dir": gt_dir}
    paths.update(panoptic_root=panoptic_root, panoptic_json=panoptic_json)
    _register(
        name,
        "cityscapes_panoptic",
        load_cityscapes_panoptic,
        paths,
        thing_classes=_NAMES,
        thing_colors=_COLORS,
        stuff_classes=_NAMES,
        stuff_colors=_COLORS,
        thing_dataset_id_to_contiguous_id={
            l.id: l.trainId for l in CITYSCAPES_TRAIN_LABELS if l.hasInstances
        },
        stuff_dataset_id_to_contiguous_id={
            l.id: l.trainId for l in CITYSCAPES_TRAIN_LABELS if not l.hasInstances
        },
        ignore_label=IGNORE_LABEL,
        label_divisor=1000,
        image_root=image_dir,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        sem_seg_root=gt_dir,
        gt_dir=gt_dir,
        evaluator_type="cityscapes_panoptic_seg",
    )


def register_all_cityscapes(root: str) -> None:
    """Registers every Cityscapes split under ``<root>/cityscapes``, replacing
    detectron2's registrations of the same names."""
    base = os.path.join(root, "cityscapes")
    for split in ("train", "val", "test"):  # the test split has no panoptic ground truth
        image_dir = os.path.join(base, "leftImg8bit", split)
        gt_dir = os.path.join(base, "gtFine", split)
        register_cityscapes_instances(f"cityscapes_fine_instance_seg_{split}", image_dir, gt_dir)
        register_cityscapes_semantic(f"cityscapes_fine_sem_seg_{split}", image_dir, gt_dir)
        if split != "test":
            pan = os.path.join(base, "gtFine", f"cityscapes_panoptic_{split}")
            name = f"cityscapes_fine_panoptic_{split}"
            register_cityscapes_panoptic(name, image_dir, gt_dir, pan, pan + ".json")
