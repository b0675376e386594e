"""The toy datasets: determinism, agreement of every label format, scene statistics,
first-use generation (also from concurrent processes) and registration."""

import hashlib
import json
import multiprocessing
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

import d2ext  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.data.datasets import check_panoptic_png, registered_spec, toy, toy_scenes
from d2ext.data.datasets.toy_scenes import BAR, MIN_VISIBLE_AREA, make_scene

NUM_THINGS, NUM_STUFF = 3, 2


def _tree_hashes(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def test_generation_is_byte_identical_for_a_seed(tmp_path):
    a = toy.generate_toy_dataset(str(tmp_path / "a"), num_train=5, num_val=3, seed=7)
    b = toy.generate_toy_dataset(str(tmp_path / "b"), num_train=5, num_val=3, seed=7)
    hashes_a, hashes_b = _tree_hashes(tmp_path / "a"), _tree_hashes(tmp_path / "b")
    assert hashes_a == hashes_b
    assert a == b
    # The manifest lists every other file with its hash.
    assert {k: v for k, v in hashes_a.items() if k != toy.MANIFEST} == a["files"]
    assert len(a["files"]) == 4 * (5 + 3) + 4  # 4 PNGs per image + 4 json
    c = toy.generate_toy_dataset(str(tmp_path / "c"), num_train=5, num_val=0, seed=8)
    assert c["files"]["images/train/000001.png"] != a["files"]["images/train/000001.png"]


def test_every_label_format_agrees(small_toy):
    paths = toy.toy_paths(small_toy, "val")
    with open(paths["panoptic_json"]) as f:
        panoptic = json.load(f)
    with open(paths["instances_json"]) as f:
        instances = json.load(f)
    anns_by_image = {}
    for ann in instances["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    contiguous = {c["id"]: i for i, c in enumerate(toy.TOY_CATEGORIES)}
    assert [c["id"] for c in instances["categories"]] == [1, 2, 3]
    assert {c["id"]: c["isthing"] for c in panoptic["categories"]} == {1: 1, 2: 1, 3: 1, 4: 0, 5: 0}

    for pan_ann in panoptic["annotations"]:
        name = pan_ann["file_name"]
        image = np.array(Image.open(os.path.join(paths["image_root"], name)))
        pan = _rgb2id(np.array(Image.open(os.path.join(paths["panoptic_root"], name))))
        sem = np.array(Image.open(os.path.join(paths["sem_seg_root"], name)))
        stuff = np.array(Image.open(os.path.join(paths["stuff_root"], name)))
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert sem.shape == stuff.shape == pan.shape == (256, 256)
        segments = pan_ann["segments_info"]
        check_panoptic_png(pan, segments, name)
        assert (pan != 0).all() and 255 not in sem  # every pixel is labelled

        expected_sem = np.full(pan.shape, 255)
        expected_stuff = np.full(pan.shape, 255)
        for seg in segments:
            mask = pan == seg["id"]
            assert seg["area"] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert seg["bbox"] == [
                xs.min(),
                ys.min(),
                xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1,
            ]
            expected_sem[mask] = contiguous[seg["category_id"]]
            expected_stuff[mask] = (
                0 if seg["category_id"] <= NUM_THINGS else seg["category_id"] - NUM_THINGS
            )
        np.testing.assert_array_equal(sem, expected_sem)
        np.testing.assert_array_equal(stuff, expected_stuff)

        # Instances json: the thing segments' masks, in the same order, exactly.
        things = [s for s in segments if s["category_id"] <= NUM_THINGS]
        anns = anns_by_image.get(pan_ann["image_id"], [])
        assert len(anns) == len(things)
        for ann, seg in zip(anns, things):
            mask = mask_util.decode(ann["segmentation"]).astype(bool)
            np.testing.assert_array_equal(mask, pan == seg["id"])
            assert ann["category_id"] == seg["category_id"] and ann["iscrowd"] == 0
            assert ann["area"] == seg["area"] >= MIN_VISIBLE_AREA
            assert ann["bbox"] == [float(v) for v in seg["bbox"]]


def test_scene_statistics():
    scenes = [make_scene(np.random.default_rng(i)) for i in range(100)]
    counts = [s.num_instances for s in scenes]
    assert min(counts) >= 0 and max(counts) <= 8
    areas, classes, bar_widths = [], [], []
    for s in scenes:
        visible = np.bincount(s.instances.ravel(), minlength=s.num_instances + 1)[1:]
        assert (visible >= MIN_VISIBLE_AREA).all()
        areas.extend(visible)
        classes.extend(s.instance_classes)
        for k in np.nonzero(s.instance_classes == BAR)[0]:
            ys, xs = np.nonzero(s.instances == k + 1)
            # thickness: the smaller principal std of the pixels (a w-wide bar: w / sqrt(12))
            cov = np.cov(np.stack([xs, ys]).astype(float)) if len(xs) > 2 else np.zeros((2, 2))
            bar_widths.append(np.sqrt(max(np.linalg.eigvalsh(cov)[0], 0)) * np.sqrt(12))
    assert set(classes) == {0, 1, 2}
    assert min(areas) < 200 and max(areas) > 5000  # small and large things
    assert max(bar_widths) <= 8.5  # bars stay thin (3-7 px) even when partly occluded
    stuff_counts = [len(np.unique(s.stuff)) for s in scenes]
    assert 1 in stuff_counts and 2 in stuff_counts  # single- and two-stuff backgrounds
    empty = make_scene(np.random.default_rng(0), empty=True)
    assert empty.num_instances == 0 and (empty.semantic() >= NUM_THINGS).all()


def test_some_images_have_no_things(small_toy):
    dicts = toy._load_toy("instances", small_toy, "train", "toy_instances_train")
    empty = [d["image_id"] for d in dicts if not d["annotations"]]
    assert 13 in empty  # index 12 of every 25
    assert len(empty) < len(dicts) / 5


def _ensure_in_child(root):
    toy.ensure_toy_dataset(root)


def test_ensure_from_concurrent_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "TOY_NUM_TRAIN", 4)
    monkeypatch.setattr(toy, "TOY_NUM_VAL", 2)
    ctx = multiprocessing.get_context("fork")  # children inherit the patched counts
    procs = [ctx.Process(target=_ensure_in_child, args=(str(tmp_path),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(os.listdir(tmp_path)) == ["toy"]  # no temporary or stale copies left
    with open(tmp_path / "toy" / toy.MANIFEST) as f:
        manifest = json.load(f)
    assert manifest["num_train"] == 4 and manifest["stats"]["val"]["images"] == 2
    assert _tree_hashes(tmp_path / "toy").keys() - {toy.MANIFEST} == manifest["files"].keys()


def test_ensure_reuses_complete_and_replaces_stale(tmp_path, monkeypatch):
    monkeypatch.setattr(toy, "TOY_NUM_TRAIN", 2)
    monkeypatch.setattr(toy, "TOY_NUM_VAL", 1)
    stale = tmp_path / "toy"
    stale.mkdir()
    (stale / "leftover.txt").write_text("from an interrupted copy")
    toy_dir = toy.ensure_toy_dataset(str(tmp_path))
    assert not os.path.exists(os.path.join(toy_dir, "leftover.txt"))
    assert sorted(os.listdir(tmp_path)) == ["toy"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(toy, "generate_toy_dataset", must_not_run)
    assert toy.ensure_toy_dataset(str(tmp_path)) == toy_dir
    monkeypatch.setattr(toy, "TOY_NUM_VAL", 3)  # another spec: regenerate
    with pytest.raises(AssertionError, match="regenerated"):
        toy.ensure_toy_dataset(str(tmp_path))


def test_registering_touches_no_disk(tmp_path):
    root = tmp_path / "absent"
    names = toy.register_toy_datasets(str(root))
    assert not root.exists()
    labelled = [
        name
        for profile in ("toy", "toy_rods")
        for split in ("train", "val")
        for kind in ("instances", "panoptic", "panoptic_separated", "sem_seg")
        for name in [f"{profile}_{kind}_{split}"] + ([f"{profile}_{kind}_train_60"] if split == "train" else [])
    ]
    assert names == labelled + ["toy_unlabeled_train"]
    assert toy.register_toy_datasets(str(root)) == names  # idempotent
    assert registered_spec("toy_sem_seg_val")["root"] == str(root)
    expected = {
        "toy_instances_train": "coco",
        "toy_panoptic_val": "coco_panoptic_seg",
        "toy_panoptic_separated_train": "coco_panoptic_seg",
        "toy_sem_seg_val": "sem_seg",
        "toy_rods_instances_train": "coco",
        "toy_rods_panoptic_val": "coco_panoptic_seg",
        "toy_rods_panoptic_separated_val": "coco_panoptic_seg",
        "toy_rods_sem_seg_train": "sem_seg",
        "toy_unlabeled_train": None,
    }
    for name, evaluator_type in expected.items():
        assert MetadataCatalog.get(name).evaluator_type == evaluator_type
    assert not root.exists()


def test_registered_toy_datasets_follow_the_conventions(small_toy):
    toy.register_toy_datasets(small_toy)
    common = {"file_name", "height", "width", "image_id"}

    inst = DatasetCatalog.get("toy_instances_val")
    meta = MetadataCatalog.get("toy_instances_val")
    assert len(inst) == 10 and set(inst[0]) == common | {"annotations"}
    assert meta.thing_classes == ["disc", "block", "bar"]
    ann = inst[0]["annotations"][0]
    assert {"bbox", "bbox_mode", "category_id", "segmentation", "iscrowd", "id"} <= set(ann)
    assert all(0 <= a["category_id"] < NUM_THINGS for d in inst for a in d["annotations"])

    pan = DatasetCatalog.get("toy_panoptic_val")
    meta = MetadataCatalog.get("toy_panoptic_val")
    assert set(pan[0]) == common | {
        "pan_seg_file_name",
        "segments_info",
        "sem_seg_file_name",
        "annotations",
    }
    assert meta.stuff_classes == ["disc", "block", "bar", "grass", "water"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    assert meta.stuff_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    assert meta.ignore_label == 255 and meta.json_file.endswith("instances_val.json")
    assert {"panoptic_json", "panoptic_root", "sem_seg_root", "image_root"} <= set(meta.as_dict())
    for d in pan:
        things = [s["category_id"] for s in d["segments_info"] if s["isthing"]]
        # a thing has the same contiguous id in annotations and in segments_info
        assert things == [a["category_id"] for a in d["annotations"]]
        assert all(s["category_id"] >= NUM_THINGS for s in d["segments_info"] if not s["isthing"])

    sep = DatasetCatalog.get("toy_panoptic_separated_val")
    meta = MetadataCatalog.get("toy_panoptic_separated_val")
    assert set(sep[0]) == common | {"annotations", "sem_seg_file_name"}
    assert "panoptic_stuff_val" in sep[0]["sem_seg_file_name"]
    assert meta.stuff_classes == ["things", "grass", "water"]
    assert meta.stuff_dataset_id_to_contiguous_id == {0: 0, 4: 1, 5: 2}
    assert meta.panoptic_json.endswith("panoptic_val.json")

    sem = DatasetCatalog.get("toy_sem_seg_val")
    meta = MetadataCatalog.get("toy_sem_seg_val")
    assert set(sem[0]) == common | {"sem_seg_file_name"}
    assert (
        meta.stuff_classes == ["disc", "block", "bar", "grass", "water"]
        and meta.ignore_label == 255
    )


def test_low_label_subsets_are_the_first_training_images(small_toy, monkeypatch):
    monkeypatch.setattr(toy, "TOY_TRAIN_SUBSETS", (3, 1000))
    names = toy.register_toy_datasets(small_toy)
    assert "toy_sem_seg_train_3" in names and "toy_panoptic_val_3" not in names
    full = sorted(DatasetCatalog.get("toy_sem_seg_train"), key=lambda d: d["image_id"])
    subset = DatasetCatalog.get("toy_sem_seg_train_3")
    assert [d["file_name"] for d in subset] == [d["file_name"] for d in full[:3]]
    assert len(DatasetCatalog.get("toy_instances_train_3")) == 3
    assert MetadataCatalog.get("toy_sem_seg_train_3").stuff_classes == MetadataCatalog.get(
        "toy_sem_seg_train"
    ).stuff_classes
    with pytest.raises(ValueError, match="subset of 1000 images: the split has only"):
        DatasetCatalog.get("toy_sem_seg_train_1000")


def test_command_line_entry(small_toy, capsys):
    assert toy.main(["--root", small_toy]) == 0
    out = capsys.readouterr().out
    assert "images/train/" in out and "30 files" in out and "val: 10 images" in out
