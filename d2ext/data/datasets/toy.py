"""The toy datasets: synthetic scenes of a profile, generated on first use in ``<root>/<profile>/``.

Labelled profiles (``toy_profiles``: ``toy``, ``toy_rods``). One generation
writes, for each split (train, val), from the same label maps::

    <profile>/
      MANIFEST.json                      written last: says the dataset is complete
      images/{split}/000001.png          RGB (toy: 256x256, toy_rods: 128x128)
      annotations/instances_{split}.json COCO instances, visible masks as compressed RLE
      annotations/panoptic_{split}.json  COCO panoptic (segments_info, categories with isthing)
      panoptic_{split}/000001.png        COCO panoptic PNG (id = R + 256 G + 256^2 B)
      sem_seg/{split}/000001.png         all classes, contiguous: things 0..T-1, stuff T..T+S-1
      panoptic_stuff_{split}/000001.png  Panoptic FPN labels: 0 = any thing, 1..S = stuff

Unlabelled: ``toy_unlabeled/images/train/000001.png`` (+ MANIFEST.json), N images
of the ``toy`` scene distribution from a random stream of their own, for
self-supervised pretraining.

Generation is deterministic (byte-identical for the same seed and library
versions; today's ``toy`` files are pinned by tests/fixtures/toy_sha256.json)
and safe when several processes start at once (see ``toy_files``).

Registered names: ``{profile}_{instances,panoptic,panoptic_separated,sem_seg}_{train,val}``
for each labelled profile, and ``toy_unlabeled_train`` (image dicts only).

``python -m d2ext.data.datasets.toy [--root R] [--profile P]`` generates and lists the files.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util

from .catalog import get_datasets_root, register_dataset
from .loaders import attach_sem_seg_files, load_coco_instances_json
from .metadata import (
    instances_metadata,
    panoptic_metadata,
    panoptic_separated_metadata,
    semantic_metadata,
)
from .toy_files import MANIFEST, Writer, encode_png, ensure_generated, in_order
from .toy_profiles import PROFILES, TOY, ToyProfile, get_profile
from .toy_scenes import TOY_CATEGORIES, ToyScene, make_scene
from .user import load_coco_instances, load_coco_panoptic, load_coco_panoptic_separated

__all__ = [
    "TOY_CATEGORIES",
    "TOY_NUM_TRAIN",
    "TOY_NUM_VAL",
    "TOY_SEED",
    "TOY_SPLITS",
    "TOY_RODS_NUM_TRAIN",
    "TOY_RODS_NUM_VAL",
    "TOY_UNLABELED_NUM_IMAGES",
    "TOY_UNLABELED_NAME",
    "ensure_toy_dataset",
    "ensure_toy_unlabeled",
    "generate_toy_dataset",
    "generate_toy_unlabeled",
    "register_toy_datasets",
    "register_toy_unlabeled",
    "render_toy_image",
    "toy_paths",
]

logger = logging.getLogger(__name__)

# Sizes and seeds of the generated datasets. Read at call time (not bound at import),
# so tests can shrink them with monkeypatch.
TOY_VERSION = TOY.version
TOY_SEED = 0
TOY_NUM_TRAIN = 300
TOY_NUM_VAL = 50
TOY_RODS_SEED = 0
TOY_RODS_NUM_TRAIN = 2000
TOY_RODS_NUM_VAL = 200
TOY_UNLABELED_NUM_IMAGES = 5000  # default of cfg.D2EXT.TOY_UNLABELED_NUM_IMAGES
TOY_UNLABELED_VERSION = 1  # of the unlabelled layout; the scenes follow TOY.version
TOY_UNLABELED_NAME = "toy_unlabeled_train"
TOY_SPLITS = ("train", "val")
LABELLED_PROFILES = tuple(PROFILES)  # ("toy", "toy_rods"): each needs its entry in _sizes
KINDS = ("instances", "panoptic", "panoptic_separated", "sem_seg")
# Low-label training subsets, named as detectron2's coco_2017_val_100: the first
# N training images (the scenes are random, so the first N are a random sample)
# under "{profile}_{kind}_train_{N}", e.g. toy_sem_seg_train_60 (a fifth of toy).
TOY_TRAIN_SUBSETS = (60,)
# SeedSequence key of the unlabelled images: not a split index (train 0, val 1), so
# no unlabelled image repeats a labelled one.
_UNLABELED_STREAM = 1000


def _sizes(profile: ToyProfile) -> Tuple[int, int, int]:
    """(num_train, num_val, seed) of a labelled profile, from the globals as they are now."""
    sizes = {
        "toy": (TOY_NUM_TRAIN, TOY_NUM_VAL, TOY_SEED),
        "toy_rods": (TOY_RODS_NUM_TRAIN, TOY_RODS_NUM_VAL, TOY_RODS_SEED),
    }
    return sizes[profile.name]


def toy_paths(root: str, split: str, profile: "str | ToyProfile" = "toy") -> Dict[str, str]:
    """The files of one split under ``<root>/<profile>``."""
    folder = os.path.join(root, get_profile(profile).name)
    return {
        "image_root": os.path.join(folder, "images", split),
        "instances_json": os.path.join(folder, "annotations", f"instances_{split}.json"),
        "panoptic_json": os.path.join(folder, "annotations", f"panoptic_{split}.json"),
        "panoptic_root": os.path.join(folder, f"panoptic_{split}"),
        "sem_seg_root": os.path.join(folder, "sem_seg", split),
        "stuff_root": os.path.join(folder, f"panoptic_stuff_{split}"),
    }


# ---------------------------------------------------------------------------- labels
def _segment_id(n: int) -> int:
    # An odd multiplier modulo 2^24 is a bijection: ids stay unique and non-zero for
    # n < 2^24, and spread over R, G and B so the panoptic PNGs are viewable.
    return (n * 0x1F3D5B) % (1 << 24)


def _rle(mask: np.ndarray) -> Dict[str, Any]:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _annotate(scene: ToyScene, image_id: int, next_ann_id: int):
    """(instance annotations, segments_info, (H, W) panoptic ids) of one scene.

    Dataset ids as in ``ToyProfile.categories``: thing t is t + 1, stuff s is T + 1 + s.
    """
    annotations, segments = [], []
    num, num_things = scene.num_instances, scene.num_thing_classes
    thing_seg_ids = np.array([0] + [_segment_id(k) for k in range(1, num + 1)], np.int64)
    for k in range(1, num + 1):
        rle = _rle(scene.instances == k)
        bbox = [float(v) for v in mask_util.toBbox(rle)]
        area = int(mask_util.area(rle))
        category_id = int(scene.instance_classes[k - 1]) + 1
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
    num_stuff = scene.num_stuff_classes
    stuff_seg_ids = np.array([_segment_id(num + 1 + s) for s in range(num_stuff)])
    background = scene.instances == 0
    for s in range(num_stuff):
        mask = background & (scene.stuff == s)
        if mask.any():
            rle = _rle(mask)
            segments.append(
                {
                    "id": int(stuff_seg_ids[s]),
                    "category_id": num_things + 1 + s,
                    "iscrowd": 0,
                    "bbox": [int(v) for v in mask_util.toBbox(rle)],
                    "area": int(mask.sum()),
                }
            )
    pan = np.where(background, stuff_seg_ids[scene.stuff], thing_seg_ids[scene.instances])
    return annotations, segments, pan


def _pan_rgb(pan: np.ndarray) -> np.ndarray:
    return np.stack([pan & 255, (pan >> 8) & 255, (pan >> 16) & 255], axis=-1).astype(np.uint8)


def _scene(profile: ToyProfile, seed: int, stream: int, index: int) -> ToyScene:
    """Image ``index`` of a stream (a split index, or _UNLABELED_STREAM).

    Drawn from ``SeedSequence([seed, stream, index])``, so it does not depend on
    the other images or the counts.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, index]))
    every = profile.empty_every
    return make_scene(rng, empty=every > 0 and index % every == every // 2, profile=profile)


def render_toy_image(
    profile: "str | ToyProfile", split: str, index: int, seed: Optional[int] = None
) -> Dict[str, Any]:
    """Image ``index`` (0-based) of a labelled split as generation writes it, without files.

    Returns {"image": (H, W, 3) uint8, "panoptic": (H, W) int64 segment ids,
    "segments_info": [...], "annotations": [...]} (dataset category ids).
    """
    profile = get_profile(profile)
    seed = _sizes(profile)[2] if seed is None else seed
    scene = _scene(profile, seed, TOY_SPLITS.index(split), index)
    anns, segments, pan = _annotate(scene, index + 1, 1)
    return {"image": scene.image, "panoptic": pan, "segments_info": segments, "annotations": anns}


# ---------------------------------------------------------------------------- generation
# where the 4 PNGs of a labelled image go, in the order _labelled_image returns them
_LABELLED_FOLDERS = (
    "images/{split}",
    "panoptic_{split}",
    "sem_seg/{split}",
    "panoptic_stuff_{split}",
)


def _labelled_image(profile: ToyProfile, seed: int, split_index: int, index: int):
    """(annotations numbered from 1, segments_info, the 4 PNGs' bytes) of one labelled image."""
    scene = _scene(profile, seed, split_index, index)
    anns, segments, pan = _annotate(scene, index + 1, 1)
    arrays = (scene.image, _pan_rgb(pan), scene.semantic(), scene.stuff_separated())
    return anns, segments, [encode_png(a) for a in arrays]


def _toy_spec(num_train: int, num_val: int, seed: int, profile: ToyProfile = TOY) -> Dict[str, int]:
    return {
        "version": profile.version,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": profile.image_size,
    }


def generate_toy_dataset(
    out_dir: str,
    num_train: int = TOY_NUM_TRAIN,
    num_val: int = TOY_NUM_VAL,
    seed: int = TOY_SEED,
    profile: "str | ToyProfile" = "toy",
) -> Dict[str, Any]:
    """Writes a labelled toy dataset into ``out_dir`` (the ``<profile>/`` folder itself).

    Returns its manifest. Image ``i`` of split ``s`` is drawn from
    ``SeedSequence([seed, s, i])``, so it does not depend on the other images or the counts.
    """
    profile = get_profile(profile)
    t0 = time.perf_counter()
    writer = Writer(out_dir)
    counts = {"train": num_train, "val": num_val}
    size = profile.image_size
    categories = profile.categories
    stats: Dict[str, Dict[str, int]] = {}
    for split_index, split in enumerate(TOY_SPLITS):
        images, annotations, pan_annotations = [], [], []
        results = in_order(
            functools.partial(_labelled_image, profile, seed, split_index), counts[split]
        )
        for index, (anns, segments, pngs) in enumerate(results):
            image_id, name = index + 1, f"{index + 1:06d}.png"
            for ann in anns:  # numbered from 1 in the image; the json numbers them all
                ann["id"] += len(annotations)
            for folder, data in zip(_LABELLED_FOLDERS, pngs):
                writer.write(f"{folder.format(split=split)}/{name}", data)
            images.append({"id": image_id, "file_name": name, "height": size, "width": size})
            annotations.extend(anns)
            pan_annotations.append(
                {"image_id": image_id, "file_name": name, "segments_info": segments}
            )
            if (index + 1) % 500 == 0 or index + 1 == counts[split]:
                logger.info("%s %s: %d/%d images", profile.name, split, index + 1, counts[split])
        info = {"description": profile.description, "version": profile.version, "seed": seed}
        things = [dict(c, supercategory="shape") for c in categories if c["isthing"]]
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
                "categories": categories,
            },
        )
        stats[split] = {"images": len(images), "instances": len(annotations)}
    manifest = {
        **_toy_spec(num_train, num_val, seed, profile),
        "categories": categories,
        "stats": stats,
        "files": dict(writer.hashes),
    }
    writer.json(MANIFEST, manifest)  # last: its presence means "complete"
    logger.info(
        "Generated the %s dataset in %s in %.1f s: %s",
        profile.name,
        out_dir,
        time.perf_counter() - t0,
        stats,
    )
    return manifest


def ensure_toy_dataset(root: Optional[str] = None, profile: "str | ToyProfile" = "toy") -> str:
    """Returns ``<root>/<profile>``, generating it first unless a complete, current copy is there.

    Uses the module's sizes (TOY_NUM_TRAIN, TOY_RODS_NUM_VAL, ...) as they are at
    call time. Safe to call from many processes at once.
    """
    profile = get_profile(profile)
    num_train, num_val, seed = _sizes(profile)
    spec = _toy_spec(num_train, num_val, seed, profile)
    return ensure_generated(
        get_datasets_root(root),
        profile.name,
        spec,
        lambda out: generate_toy_dataset(out, num_train, num_val, seed, profile),
    )


# ---------------------------------------------------------------------------- unlabelled
def _unlabeled_spec(num_images: int, seed: int) -> Dict[str, int]:
    return {
        "version": TOY_UNLABELED_VERSION,
        "toy_version": TOY.version,
        "seed": seed,
        "num_images": num_images,
        "image_size": TOY.image_size,
    }


def generate_toy_unlabeled(out_dir: str, num_images: int, seed: int = TOY_SEED) -> Dict[str, Any]:
    """Writes ``num_images`` toy images (no labels) into ``out_dir``; returns the manifest.

    Same scene distribution as the labelled ``toy`` data (empty scenes included),
    drawn from ``SeedSequence([seed, _UNLABELED_STREAM, i])``.
    """
    t0 = time.perf_counter()
    writer = Writer(out_dir)
    def encode(index: int) -> bytes:
        return encode_png(_scene(TOY, seed, _UNLABELED_STREAM, index).image)

    for index, data in enumerate(in_order(encode, num_images)):
        writer.write(f"images/train/{index + 1:06d}.png", data)
        if (index + 1) % 1000 == 0:
            logger.info("toy_unlabeled: %d/%d images", index + 1, num_images)
    manifest = {**_unlabeled_spec(num_images, seed), "files": dict(writer.hashes)}
    writer.json(MANIFEST, manifest)
    logger.info(
        "Generated %d unlabelled toy images in %s in %.1f s",
        num_images,
        out_dir,
        time.perf_counter() - t0,
    )
    return manifest


def ensure_toy_unlabeled(root: Optional[str] = None, num_images: Optional[int] = None) -> str:
    """Returns ``<root>/toy_unlabeled``, generating it first unless complete and current.

    ``num_images``: None means TOY_UNLABELED_NUM_IMAGES as it is at call time.
    """
    num = TOY_UNLABELED_NUM_IMAGES if num_images is None else int(num_images)
    return ensure_generated(
        get_datasets_root(root),
        "toy_unlabeled",
        _unlabeled_spec(num, TOY_SEED),
        lambda out: generate_toy_unlabeled(out, num, TOY_SEED),
    )


def _load_unlabeled(root: str, num_images: Optional[int]) -> List[dict]:
    folder = ensure_toy_unlabeled(root, num_images)
    with open(os.path.join(folder, MANIFEST)) as f:
        num = json.load(f)["num_images"]
    size = TOY.image_size
    image_root = os.path.join(folder, "images", "train")
    return [
        {
            "file_name": os.path.join(image_root, f"{i:06d}.png"),
            "height": size,
            "width": size,
            "image_id": i,
        }
        for i in range(1, num + 1)
    ]


def register_toy_unlabeled(root: Optional[str] = None, num_images: Optional[int] = None) -> str:
    """Registers ``toy_unlabeled_train`` (image dicts only) on ``<root>/toy_unlabeled``.

    ``num_images``: e.g. ``cfg.D2EXT.TOY_UNLABELED_NUM_IMAGES``; None means
    TOY_UNLABELED_NUM_IMAGES at load time. Touches no file; replaces a previous
    registration with another root or count. Returns the name.
    """
    root = get_datasets_root(root)
    num = None if num_images is None else int(num_images)
    if num is not None and num < 1:
        raise ValueError(f"{TOY_UNLABELED_NAME} needs at least one image, got {num_images}")
    spec = {
        "type": "toy_unlabeled",
        "root": root,
        "num_images": num,
        "version": TOY_UNLABELED_VERSION,
    }
    metadata = {
        "image_root": os.path.join(root, "toy_unlabeled", "images", "train"),
        "evaluator_type": None,
    }
    loader = functools.partial(_load_unlabeled, root, num)
    register_dataset(TOY_UNLABELED_NAME, spec, loader, metadata, replace=True)
    return TOY_UNLABELED_NAME


# ---------------------------------------------------------------------------- registration
def _load_toy(
    kind: str, root: str, split: str, name: str, profile: "str | ToyProfile" = "toy"
) -> List[dict]:
    ensure_toy_dataset(root, profile)
    p = toy_paths(root, split, profile)
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


def _load_toy_subset(num_images: int, *args) -> List[dict]:
    """The first ``num_images`` dicts of ``_load_toy(*args)`` by image_id."""
    dicts = sorted(_load_toy(*args), key=lambda d: d["image_id"])
    if len(dicts) < num_images:
        raise ValueError(f"toy subset of {num_images} images: the split has only {len(dicts)}")
    return dicts[:num_images]


def _toy_metadata(kind: str, p: Dict[str, str], categories: List[dict]) -> Dict[str, Any]:
    common = {"image_root": p["image_root"], "ignore_label": 255}
    if kind == "instances":
        things = [c for c in categories if c["isthing"]]
        return {
            **instances_metadata(things),
            "json_file": p["instances_json"],
            "evaluator_type": "coco",
            "image_root": p["image_root"],
        }
    if kind == "panoptic":
        return {
            **panoptic_metadata(categories),
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
            **panoptic_separated_metadata(categories),
            **common,
            "json_file": p["instances_json"],
            "panoptic_json": p["panoptic_json"],
            "panoptic_root": p["panoptic_root"],
            "sem_seg_root": p["stuff_root"],
            "evaluator_type": "coco_panoptic_seg",
        }
    return {
        **semantic_metadata(categories),
        **common,
        "sem_seg_root": p["sem_seg_root"],
        "evaluator_type": "sem_seg",
    }


def register_toy_profile(root: Optional[str], profile: "str | ToyProfile") -> List[str]:
    """Registers ``{profile}_{kind}_{split}`` (and the TOY_TRAIN_SUBSETS of train) for
    ``<root>/<profile>``; returns the names."""
    root = get_datasets_root(root)
    profile = get_profile(profile)
    names = []
    for split in TOY_SPLITS:
        p = toy_paths(root, split, profile)
        for kind in KINDS:
            name = f"{profile.name}_{kind}_{split}"
            spec = {
                "type": f"toy_{kind}",
                "profile": profile.name,
                "root": root,
                "split": split,
                "version": profile.version,
            }
            args = (kind, root, split, name, profile.name)
            metadata = _toy_metadata(kind, p, profile.categories)
            register_dataset(name, spec, functools.partial(_load_toy, *args), metadata, replace=True)
            names.append(name)
            for n in TOY_TRAIN_SUBSETS if split == "train" else ():
                subset = f"{name}_{n}"
                loader = functools.partial(_load_toy_subset, n, kind, root, split, subset, profile.name)
                register_dataset(subset, {**spec, "num_images": n}, loader, metadata, replace=True)
                names.append(subset)
    return names


def register_toy_datasets(root: Optional[str] = None) -> List[str]:
    """Registers every toy name for ``root`` (default: $DETECTRON2_DATASETS).

    The labelled profiles' names, then ``toy_unlabeled_train`` with the default
    count (TOY_UNLABELED_NUM_IMAGES at load time). Touches no file: the data is
    generated when a dataset is first loaded. Repeating it is a no-op; another
    root replaces the previous registration. Returns the names.
    """
    names = [n for profile in LABELLED_PROFILES for n in register_toy_profile(root, profile)]
    return names + [register_toy_unlabeled(root)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the d2ext toy datasets.")
    parser.add_argument(
        "--root", default=None, help="datasets root (default: $DETECTRON2_DATASETS or ./datasets)"
    )
    parser.add_argument(
        "--profile",
        default="toy",
        choices=[*LABELLED_PROFILES, "toy_unlabeled"],
        help="which dataset to generate (default: toy)",
    )
    parser.add_argument(
        "--num-images", type=int, default=None, help="toy_unlabeled only: how many images"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.profile == "toy_unlabeled":
        folder = ensure_toy_unlabeled(args.root, args.num_images)
    else:
        folder = ensure_toy_dataset(args.root, args.profile)
    with open(os.path.join(folder, MANIFEST)) as f:
        manifest = json.load(f)
    folders: Dict[str, int] = {}
    for relpath in manifest["files"]:
        parent = os.path.dirname(relpath)
        folders[parent] = folders.get(parent, 0) + 1
    print(
        f"{args.profile} dataset (version {manifest['version']}, seed {manifest['seed']})"
        f" in {folder}:"
    )
    for parent in sorted(folders):
        print(f"  {parent + '/':<28} {folders[parent]:>5} files")
    for split, stats in manifest.get("stats", {}).items():
        print(f"  {split}: {stats['images']} images, {stats['instances']} instances")
    print(f"  {MANIFEST} lists every file with its sha256")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
