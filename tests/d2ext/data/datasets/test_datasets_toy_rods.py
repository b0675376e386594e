"""toy_rods: crowded capsules. Counts and the drop rule, the look (elongated, dark rims),
agreement of every label format, determinism, and loading every name as the baselines do."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

import d2ext  # noqa: F401
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog

from d2ext.data.datasets import check_panoptic_png, toy, toy_scenes
from d2ext.data.datasets.toy_profiles import TOY_RODS
from d2ext.data.datasets.toy_scenes import Capsule, make_scene

RODS_TRAIN, RODS_VAL = 3, 2
NAMES = [
    f"toy_rods_{kind}_{split}"
    for split in ("train", "val")
    for kind in ("instances", "panoptic", "panoptic_separated", "sem_seg")
]


@pytest.fixture(scope="session")
def rods_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rods_root")
    toy.generate_toy_dataset(
        str(root / "toy_rods"), RODS_TRAIN, RODS_VAL, toy.TOY_RODS_SEED, "toy_rods"
    )
    return str(root)


@pytest.fixture
def small_rods(monkeypatch, rods_root):
    """The toy module configured for the tiny rods dataset of ``rods_root`` (no regeneration)."""
    monkeypatch.setattr(toy, "TOY_RODS_NUM_TRAIN", RODS_TRAIN)
    monkeypatch.setattr(toy, "TOY_RODS_NUM_VAL", RODS_VAL)
    return rods_root


def _rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def test_scenes_sample_10_to_30_rods_and_drop_only_hidden_ones():
    scenes = [make_scene(np.random.default_rng(i), profile=TOY_RODS) for i in range(40)]
    sampled = [s.num_sampled for s in scenes]
    assert min(sampled) >= 10 and max(sampled) <= 30 and max(sampled) - min(sampled) >= 10
    for s in scenes:
        assert s.image.shape == (128, 128, 3) and s.instances.shape == (128, 128)
        visible = np.bincount(s.instances.ravel(), minlength=s.num_instances + 1)[1:]
        assert (visible >= TOY_RODS.min_visible_area).all()
        assert (s.instance_classes == 0).all() and (s.stuff == 0).all()
    dropped = sum(sampled) - sum(s.num_instances for s in scenes)
    assert 0 < dropped < 0.1 * sum(sampled)  # crowded enough to hide some, rarely


def test_drop_rule_by_hand():
    # rod 0 is hidden by rod 1; rod 2 shows 7 px, rod 3 shows 8 px (min_visible_area = 8)
    size = 16
    masks = [np.zeros((size, size), bool) for _ in range(5)]
    masks[0][2:4, 2:6] = True
    masks[1][1:5, 1:8] = True
    masks[2][10, 0:10] = True
    masks[3][12, 0:11] = True
    masks[4][10:13, 0:3] = True  # last: covers 3 px of rod 2 and of rod 3
    instances, classes, kept = toy_scenes._composite(masks, [0] * 5, size, min_area=8)
    assert kept == [1, 3, 4] and len(classes) == 3
    # rod 2 is not drawn at all: its pixels went back to what lies under it
    assert (instances[10, 3:10] == 0).all() and (instances[12, 3:11] == 2).all()


def test_capsule_rasterization():
    cap = Capsule(cx=64.0, cy=64.0, angle=0.4, core=12.0, radius=4.0)
    mask, depth = toy_scenes._rasterize_capsule(cap, 128)
    expected_area = 2 * cap.core * 2 * cap.radius + np.pi * cap.radius**2
    assert abs(mask.sum() - expected_area) < 0.05 * expected_area
    assert depth.max() <= cap.radius and depth.max() > cap.radius - 0.75
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.stack([xs, ys]).astype(float))
    minor, major = np.sqrt(np.linalg.eigvalsh(cov))
    assert major / minor > 2.5  # elongated
    # a capsule cut by the border is clipped, not wrapped
    mask, _ = toy_scenes._rasterize_capsule(cap._replace(cx=-3.0), 128)
    assert mask[:, :10].any() and not mask[:, 100:].any()


def test_rods_are_elongated_with_dark_rims():
    ratios, rim, inside = [], [], []
    for i in range(10):
        s = make_scene(np.random.default_rng(i), profile=TOY_RODS)
        gray = s.image.astype(float).mean(-1)
        pad = np.pad(s.instances, 1, constant_values=-1)
        # a pixel touching another segment (4-neighbours): where a rim must be
        edge = (
            (pad[1:-1, 1:-1] != pad[:-2, 1:-1]) | (pad[1:-1, 1:-1] != pad[2:, 1:-1])
            | (pad[1:-1, 1:-1] != pad[1:-1, :-2]) | (pad[1:-1, 1:-1] != pad[1:-1, 2:])
        )
        thing = s.instances > 0
        rim.append(gray[thing & edge].mean())
        inside.append(gray[thing & ~edge].mean())
        for k in range(1, s.num_instances + 1):
            ys, xs = np.nonzero(s.instances == k)
            if len(xs) >= 100:
                eigenvalues = np.linalg.eigvalsh(np.cov(np.stack([xs, ys])))
                minor, major = np.sqrt(np.maximum(eigenvalues, 1e-9))
                ratios.append(major / minor)
    assert np.median(ratios) > 2.5
    assert np.mean(rim) < np.mean(inside) - 40


def test_label_formats_agree(small_rods):
    categories = TOY_RODS.categories
    assert [(c["id"], c["name"], c["isthing"]) for c in categories] == [
        (1, "rod", 1),
        (2, "background", 0),
    ]
    for split, count in (("train", RODS_TRAIN), ("val", RODS_VAL)):
        p = toy.toy_paths(small_rods, split, "toy_rods")
        with open(p["panoptic_json"]) as f:
            panoptic = json.load(f)
        with open(p["instances_json"]) as f:
            instances = json.load(f)
        assert len(panoptic["annotations"]) == len(instances["images"]) == count
        assert instances["categories"] == [dict(categories[0], supercategory="shape")]
        anns_by_image = {}
        for ann in instances["annotations"]:
            anns_by_image.setdefault(ann["image_id"], []).append(ann)
        for index, pan_ann in enumerate(panoptic["annotations"]):
            name = pan_ann["file_name"]
            image = np.array(Image.open(os.path.join(p["image_root"], name)))
            pan = _rgb2id(np.array(Image.open(os.path.join(p["panoptic_root"], name))))
            sem = np.array(Image.open(os.path.join(p["sem_seg_root"], name)))
            stuff = np.array(Image.open(os.path.join(p["stuff_root"], name)))
            assert image.shape == (128, 128, 3) and sem.shape == stuff.shape == (128, 128)
            segments = pan_ann["segments_info"]
            check_panoptic_png(pan, segments, name)
            things = [s for s in segments if s["category_id"] == 1]
            assert 1 <= len(things) <= 30
            is_rod = np.isin(pan, [s["id"] for s in things])
            np.testing.assert_array_equal(sem, np.where(is_rod, 0, 1))
            np.testing.assert_array_equal(stuff, np.where(is_rod, 0, 1))
            anns = anns_by_image[pan_ann["image_id"]]
            assert len(anns) == len(things)
            for ann, seg in zip(anns, things):
                mask = mask_util.decode(ann["segmentation"]).astype(bool)
                np.testing.assert_array_equal(mask, pan == seg["id"])
                assert ann["area"] == seg["area"] == mask.sum() >= TOY_RODS.min_visible_area
                assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            # what the gallery shows is what the files hold
            rendered = toy.render_toy_image("toy_rods", split, index)
            np.testing.assert_array_equal(rendered["image"], image)
            np.testing.assert_array_equal(rendered["panoptic"], pan)
            assert rendered["segments_info"] == segments


def test_generation_is_deterministic(tmp_path):
    a = toy.generate_toy_dataset(str(tmp_path / "a"), 2, 1, 0, "toy_rods")
    b = toy.generate_toy_dataset(str(tmp_path / "b"), 2, 1, 0, "toy_rods")
    assert a == b and len(a["files"]) == 4 * 3 + 4
    for rel in a["files"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    c = toy.generate_toy_dataset(str(tmp_path / "c"), 1, 0, 1, "toy_rods")
    assert c["files"]["images/train/000001.png"] != a["files"]["images/train/000001.png"]


def test_every_name_loads_as_the_baselines_use_it(small_rods):
    names = toy.register_toy_datasets(small_rods)
    assert set(NAMES) <= set(names)
    mapper = DatasetMapper(
        is_train=True,
        augmentations=[],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
    )
    for name in NAMES:
        dicts = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
        assert len(dicts) == (RODS_TRAIN if name.endswith("train") else RODS_VAL)
        if "instances" not in name:
            assert meta.ignore_label == 255
        out = mapper(dicts[0])
        assert out["image"].shape == (3, 128, 128)
        if "annotations" in dicts[0]:
            inst = out["instances"]
            assert len(inst) == len(dicts[0]["annotations"]) >= 1
            assert (inst.gt_classes == 0).all() and inst.gt_masks.tensor.shape[1:] == (128, 128)
        if "sem_seg_file_name" in dicts[0]:
            assert set(torch.unique(out["sem_seg"]).tolist()) <= {0, 1}
    assert MetadataCatalog.get("toy_rods_instances_train").thing_classes == ["rod"]
    assert MetadataCatalog.get("toy_rods_panoptic_val").stuff_classes == ["rod", "background"]
    sep = MetadataCatalog.get("toy_rods_panoptic_separated_train")
    assert sep.stuff_classes == ["things", "background"]
    assert sep.evaluator_type == "coco_panoptic_seg"
    assert MetadataCatalog.get("toy_rods_sem_seg_val").evaluator_type == "sem_seg"
    assert "panoptic_stuff_train" in DatasetCatalog.get("toy_rods_panoptic_separated_train")[0][
        "sem_seg_file_name"
    ]
