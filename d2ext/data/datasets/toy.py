"""The toy datasets: synthetic scenes generated on first use under ``<root>/toy/``.

One generation writes, for each split (train, val), from the same label maps::

    toy/
      MANIFEST.json                      written last: says the dataset is complete
      images/{split}/000001.png          256x256 RGB
      annotations/instances_{split}.json COCO instances, visible masks as compressed RLE
      annotations/panoptic_{split}.json  COCO panoptic (segments_info, categories with isthing)
      panoptic_{split}/000001.png        COCO panoptic PNG (id = R + 256 G + 256^2 B)
      sem_seg/{split}/000001.png         all classes, contiguous: things 0..T-1, stuff T..T+S-1
      panoptic_stuff_{split}/000001.png  Panoptic FPN labels: 0 = any thing, 1..S = stuff

Generation is deterministic (byte-identical for the same seed and library
versions) and safe when several processes start at once: each writes into a
temporary sibling folder and renames it into place; a process that loses the
race discards its copy.

Registered names: ``toy_instances_{split}``, ``toy_panoptic_{split}``,
``toy_panoptic_separated_{split}``, ``toy_sem_seg_{split}``.

``python -m d2ext.data.datasets.toy [--root R]`` generates and lists the files.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from .catalog import get_datasets_root, register_dataset
from .loaders import attach_sem_seg_files, load_coco_instances_json
from .metadata import (
    instances_metadata,
    panoptic_metadata,
    panoptic_separated_metadata,
    semantic_metadata,
)
from .toy_scenes import IMAGE_SIZE, STUFF_CLASSES, TOY_CATEGORIES, ToyScene, make_scene
from .user import load_coco_instances, load_coco_panoptic, load_coco_panoptic_separated

__all__ = [
    "TOY_CATEGORIES",
    "TOY_NUM_TRAIN",
    "TOY_NUM_VAL",
    "TOY_SEED",
    "TOY_SPLITS",
    "ensure_toy_dataset",
    "generate_toy_dataset",
    "register_toy_datasets",
    "toy_paths",
]

logger = logging.getLogger(__name__)

TOY_VERSION = 1  # bump when the generated content changes: stale copies are regenerated
TOY_SEED = 0
TOY_NUM_TRAIN = 300
TOY_NUM_VAL = 50
TOY_SPLITS = ("train", "val")
EMPTY_EVERY = 25  # image index % 25 == 12 has no things: 4% of the images
PNG_COMPRESS_LEVEL = 6
MANIFEST = "MANIFEST.json"
_THING_IDS = [c["id"] for c in TOY_CATEGORIES if c["isthing"]]
_STUFF_IDS = [c["id"] for c in TOY_CATEGORIES if not c["isthing"]]


def toy_paths(root: str, split: str) -> Dict[str, str]:
    """The files of one split under ``<root>/toy``."""
    toy = os.path.join(root, "toy")
    return {
        "image_root": os.path.join(toy, "images", split),
        "instances_json": os.path.join(toy, "annotations", f"instances_{split}.json"),
        "panoptic_json": os.path.join(toy, "annotations", f"panoptic_{split}.json"),
        "panoptic_root": os.path.join(toy, f"panoptic_{split}"),
        "sem_seg_root": os.path.join(toy, "sem_seg", split),
        "stuff_root": os.path.join(toy, f"panoptic_stuff_{split}"),
    }


# ---------------------------------------------------------------------------- writing
class _Writer:
    """Writes files under a folder, remembering each one's sha256 for the manifest."""

    def __init__(self, folder: str):
        self.folder = folder
        self.hashes: Dict[str, str] = {}

    def write(self, relpath: str, data: bytes) -> None:
        path = os.path.join(self.folder, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.hashes[relpath] = hashlib.sha256(data).hexdigest()

    def png(self, relpath: str, array: np.ndarray) -> None:
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        self.write(relpath, buf.getvalue())

    def json(self, relpath: str, obj: Any) -> None:
        self.write(relpath, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def _segment_id(n: int) -> int:
    # An odd multiplier modulo 2^24 is a bijection: ids stay unique and non-zero for
    # n < 2^24, and spread over R, G and B so the panoptic PNGs are viewable.
    return (n * 0x1F3D5B) % (1 << 24)


def _rle(mask: np.ndarray) -> Dict[str, Any]:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _annotate(scene: ToyScene, image_id: int, next_ann_id: int):
    """(instance annotations, segments_info, (H, W) panoptic ids) of one scene."""
    annotations, segments = [], []
    num = scene.num_instances
    thing_seg_ids = np.array([0] + [_segment_id(k) for k in range(1, num + 1)], np.int64)
    for k in range(1, num + 1):
        rle = _rle(scene.instances == k)
        bbox = [float(v) for v in mask_util.toBbox(rle)]
        area = int(mask_util.area(rle))
        category_id = _THING_IDS[int(scene.instance_classes[k - 1])]
        annotations.append(
            {
                "id": next_ann_id + k - 1,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": rle,
                "bbox": bbox,
                "area": area,
                "iscrowd": 0,
            }
        )
        segments.append(
            {
                "id": int(thing_seg_ids[k]),
                "category_id": category_id,
                "iscrowd": 0,
                "bbox": [int(v) for v in bbox],
                "area": area,
            }
        )
    stuff_seg_ids = np.array([_segment_id(num + 1 + s) for s in range(len(STUFF_CLASSES))])
    background = scene.instances == 0
    for s, category_id in enumerate(_STUFF_IDS):
        mask = background & (scene.stuff == s)
        if mask.any():
            rle = _rle(mask)
            segments.append(
                {
                    "id": int(stuff_seg_ids[s]),
                    "category_id": category_id,
                    "iscrowd": 0,
                    "bbox": [int(v) for v in mask_util.toBbox(rle)],
                    "area": int(mask.sum()),
                }
            )
    pan = np.where(background, stuff_seg_ids[scene.stuff], thing_seg_ids[scene.instances])
    return annotations, segments, pan


def _pan_rgb(pan: np.ndarray) -> np.ndarray:
    return np.stack([pan & 255, (pan >> 8) & 255, (pan >> 16) & 255], axis=-1).astype(np.uint8)


def generate_toy_dataset(
    out_dir: str, num_train: int = TOY_NUM_TRAIN, num_val: int = TOY_NUM_VAL, seed: int = TOY_SEED
) -> Dict[str, Any]:
    """Writes the toy dataset into ``out_dir`` (the ``toy/`` folder itself); returns its manifest.

    Image ``i`` of split ``s`` is drawn from ``SeedSequence([seed, s, i])``, so it does not
    depend on the other images or the counts.
    """
    t0 = time.perf_counter()
    writer = _Writer(out_dir)
    counts = {"train": num_train, "val": num_val}
    stats: Dict[str, Dict[str, int]] = {}
    for split_index, split in enumerate(TOY_SPLITS):
        images, annotations, pan_annotations = [], [], []
        for index in range(counts[split]):
            rng = np.random.default_rng(np.random.SeedSequence([seed, split_index, index]))
            scene = make_scene(rng, empty=index % EMPTY_EVERY == EMPTY_EVERY // 2)
            image_id, name = index + 1, f"{index + 1:06d}.png"
            anns, segments, pan = _annotate(scene, image_id, len(annotations) + 1)
            writer.png(f"images/{split}/{name}", scene.image)
            writer.png(f"panoptic_{split}/{name}", _pan_rgb(pan))
            writer.png(f"sem_seg/{split}/{name}", scene.semantic())
            writer.png(f"panoptic_stuff_{split}/{name}", scene.stuff_separated())
            images.append(
                {"id": image_id, "file_name": name, "height": IMAGE_SIZE, "width": IMAGE_SIZE}
            )
            annotations.extend(anns)
            pan_annotations.append(
                {"image_id": image_id, "file_name": name, "segments_info": segments}
            )
            if (index + 1) % 100 == 0 or index + 1 == counts[split]:
                logger.info("toy %s: %d/%d images generated", split, index + 1, counts[split])
        info = {"description": "d2ext toy dataset", "version": TOY_VERSION, "seed": seed}
        things = [dict(c, supercategory="shape") for c in TOY_CATEGORIES if c["isthing"]]
        writer.json(
            f"annotations/instances_{split}.json",
            {"info": info, "images": images, "annotations": annotations, "categories": things},
        )
        writer.json(
            f"annotations/panoptic_{split}.json",
            {
                "info": info,
                "images": images,
                "annotations": pan_annotations,
                "categories": TOY_CATEGORIES,
            },
        )
        stats[split] = {"images": len(images), "instances": len(annotations)}
    manifest = {
        **_toy_spec(num_train, num_val, seed),
        "categories": TOY_CATEGORIES,
        "stats": stats,
        "files": dict(writer.hashes),
    }
    writer.json(MANIFEST, manifest)  # last: its presence means "complete"
    logger.info(
        "Generated the toy dataset in %s in %.1f s: %s", out_dir, time.perf_counter() - t0, stats
    )
    return manifest


# ---------------------------------------------------------------------------- first use
def _toy_spec(num_train: int, num_val: int, seed: int) -> Dict[str, int]:
    return {
        "version": TOY_VERSION,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": IMAGE_SIZE,
    }


def _is_complete(toy_dir: str, spec: Dict[str, int]) -> bool:
    try:
        with open(os.path.join(toy_dir, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    return all(manifest.get(k) == v for k, v in spec.items())


def ensure_toy_dataset(root: Optional[str] = None) -> str:
    """Returns ``<root>/toy``, generating it first unless a complete, current copy is there.

    Uses the module's TOY_NUM_TRAIN / TOY_NUM_VAL / TOY_SEED as they are at call
    time. Safe to call from many processes at once.
    """
    root = get_datasets_root(root)
    toy_dir = os.path.join(root, "toy")
    spec = _toy_spec(TOY_NUM_TRAIN, TOY_NUM_VAL, TOY_SEED)
    if _is_complete(toy_dir, spec):
        return toy_dir
    logger.info("Generating the toy dataset in %s (first use) ...", toy_dir)
    os.makedirs(root, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".toy.tmp-", dir=root)
    stale_dir = None
    try:
        generate_toy_dataset(tmp_dir, spec["num_train"], spec["num_val"], spec["seed"])
        if os.path.lexists(toy_dir) and not _is_complete(toy_dir, spec):
            # An older version or an interrupted copy made by hand: move it aside.
            stale_dir = os.path.join(root, f".toy.stale-{uuid.uuid4().hex}")
            try:
                os.rename(toy_dir, stale_dir)
                logger.warning(
                    "Replacing %s: it was incomplete or from another toy version", toy_dir
                )
            except FileNotFoundError:  # another process moved it first
                stale_dir = None
        try:
            os.rename(tmp_dir, toy_dir)
        except OSError:
            # Lost the race: another process renamed its (identical) copy into place.
            if not _is_complete(toy_dir, spec):
                raise
            logger.info("Another process generated %s first; using it", toy_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if stale_dir is not None:
            shutil.rmtree(stale_dir, ignore_errors=True)
    return toy_dir


# ---------------------------------------------------------------------------- registration
def _load_toy(kind: str, root: str, split: str, name: str) -> List[dict]:
    ensure_toy_dataset(root)
    p = toy_paths(root, split)
    if kind == "instances":
        return load_coco_instances(p["instances_json"], p["image_root"], name)
    if kind == "panoptic":
        return load_coco_panoptic(
            p["panoptic_json"],
            p["panoptic_root"],
            p["image_root"],
            p["sem_seg_root"],
            p["instances_json"],
            name,
        )
    if kind == "panoptic_separated":
        return load_coco_panoptic_separated(
            p["instances_json"], p["image_root"], p["stuff_root"], name
        )
    # sem_seg: the images of the json, each with its all-class label PNG
    dicts, _ = load_coco_instances_json(p["instances_json"], p["image_root"])
    for d in dicts:
        del d["annotations"]
    attach_sem_seg_files(dicts, p["sem_seg_root"], p["instances_json"])
    return dicts


def _toy_metadata(kind: str, p: Dict[str, str]) -> Dict[str, Any]:
    common = {"image_root": p["image_root"], "ignore_label": 255}
    if kind == "instances":
        things = [c for c in TOY_CATEGORIES if c["isthing"]]
        return {
            **instances_metadata(things),
            "json_file": p["instances_json"],
            "evaluator_type": "coco",
            "image_root": p["image_root"],
        }
    if kind == "panoptic":
        return {
            **panoptic_metadata(TOY_CATEGORIES),
            **common,
            "json_file": p["instances_json"],
            "panoptic_json": p["panoptic_json"],
            "panoptic_root": p["panoptic_root"],
            "sem_seg_root": p["sem_seg_root"],
            "label_divisor": 1000,
            "evaluator_type": "coco_panoptic_seg",
        }
    if kind == "panoptic_separated":
        return {
            **panoptic_separated_metadata(TOY_CATEGORIES),
            **common,
            "json_file": p["instances_json"],
            "panoptic_json": p["panoptic_json"],
            "panoptic_root": p["panoptic_root"],
            "sem_seg_root": p["stuff_root"],
            "evaluator_type": "coco_panoptic_seg",
        }
    return {
        **semantic_metadata(TOY_CATEGORIES),
        **common,
        "sem_seg_root": p["sem_seg_root"],
        "evaluator_type": "sem_seg",
    }


def register_toy_datasets(root: Optional[str] = None) -> List[str]:
    """Registers the toy names for ``<root>/toy`` (default root: $DETECTRON2_DATASETS).

    Touches no file: the data is generated when a dataset is first loaded.
    Repeating it is a no-op; another root replaces the previous registration.
    Returns the names.
    """
    root = get_datasets_root(root)
    names = []
    for split in TOY_SPLITS:
        for kind in ("instances", "panoptic", "panoptic_separated", "sem_seg"):
            name = f"toy_{kind}_{split}"
            spec = {"type": f"toy_{kind}", "root": root, "split": split, "version": TOY_VERSION}
            loader = functools.partial(_load_toy, kind, root, split, name)
            register_dataset(
                name, spec, loader, _toy_metadata(kind, toy_paths(root, split)), replace=True
            )
            names.append(name)
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the d2ext toy datasets.")
    parser.add_argument(
        "--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    toy_dir = ensure_toy_dataset(args.root)
    with open(os.path.join(toy_dir, MANIFEST)) as f:
        manifest = json.load(f)
    folders: Dict[str, int] = {}
    for relpath in manifest["files"]:
        folder = os.path.dirname(relpath)
        folders[folder] = folders.get(folder, 0) + 1
    print(f"toy dataset (version {manifest['version']}, seed {manifest['seed']}) in {toy_dir}:")
    for folder in sorted(folders):
        print(f"  {folder + '/':<28} {folders[folder]:>5} files")
    for split, stats in manifest["stats"].items():
        print(f"  {split}: {stats['images']} images, {stats['instances']} instances")
    print(f"  {MANIFEST} lists every file with its sha256")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
