"""toy_unlabeled_train: image dicts only, of the toy distribution but not its labelled images;
the count comes from the caller (the config) or the module default, read lazily."""

import os

import numpy as np
import pytest
from PIL import Image

import d2ext  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.data.datasets import registered_spec, toy


def _images(folder):
    return {
        name: np.array(Image.open(os.path.join(folder, name)))
        for name in sorted(os.listdir(folder))
    }


def test_registering_touches_no_disk_and_sets_the_count(tmp_path):
    root = tmp_path / "absent"
    assert toy.register_toy_unlabeled(str(root), 7) == toy.TOY_UNLABELED_NAME
    assert not root.exists()
    spec = registered_spec(toy.TOY_UNLABELED_NAME)
    assert spec["num_images"] == 7 and spec["root"] == str(root)
    meta = MetadataCatalog.get(toy.TOY_UNLABELED_NAME)
    assert meta.evaluator_type is None
    assert meta.image_root == str(root / "toy_unlabeled" / "images" / "train")
    toy.register_toy_unlabeled(str(root))  # the default count (None: read at load time)
    assert registered_spec(toy.TOY_UNLABELED_NAME)["num_images"] is None
    with pytest.raises(ValueError, match="at least one image"):
        toy.register_toy_unlabeled(str(root), 0)
    assert toy.TOY_UNLABELED_NUM_IMAGES == 5000 and not root.exists()


def test_dicts_have_images_only_and_differ_from_the_labelled_ones(tmp_path, toy_root):
    toy.register_toy_unlabeled(str(tmp_path), 4)
    dicts = DatasetCatalog.get(toy.TOY_UNLABELED_NAME)
    assert [d["image_id"] for d in dicts] == [1, 2, 3, 4]
    for d in dicts:
        assert set(d) == {"file_name", "height", "width", "image_id"}
        assert (d["height"], d["width"]) == (256, 256)
    unlabeled = [np.array(Image.open(d["file_name"])) for d in dicts]
    labelled = []
    for split in ("train", "val"):
        labelled += _images(toy.toy_paths(toy_root, split)["image_root"]).values()
    assert all(u.shape == (256, 256, 3) and u.dtype == np.uint8 for u in unlabeled)
    # the same index of the labelled stream is another scene; no image repeats a labelled one
    for u in unlabeled:
        assert not any(np.array_equal(u, im) for im in labelled)
        assert min(np.abs(u.astype(int) - im).mean() for im in labelled) > 10
    assert sorted(os.listdir(tmp_path)) == ["toy_unlabeled"]


def test_default_count_is_read_when_loaded(tmp_path, monkeypatch):
    toy.register_toy_datasets(str(tmp_path))
    monkeypatch.setattr(toy, "TOY_UNLABELED_NUM_IMAGES", 2)
    first = DatasetCatalog.get(toy.TOY_UNLABELED_NAME)
    assert len(first) == 2 and not (tmp_path / "toy").exists()  # only what was asked for
    toy.register_toy_unlabeled(str(tmp_path), 3)  # another count: regenerated
    again = DatasetCatalog.get(toy.TOY_UNLABELED_NAME)
    assert len(again) == 3
    # image i does not depend on the count
    for a, b in zip(first, again):
        assert open(a["file_name"], "rb").read() == open(b["file_name"], "rb").read()


def test_generation_is_deterministic(tmp_path):
    a = toy.generate_toy_unlabeled(str(tmp_path / "a"), 2, seed=0)
    b = toy.generate_toy_unlabeled(str(tmp_path / "b"), 2, seed=0)
    c = toy.generate_toy_unlabeled(str(tmp_path / "c"), 2, seed=1)
    assert a == b and set(a["files"]) == {"images/train/000001.png", "images/train/000002.png"}
    assert a["files"] != c["files"]


def test_command_line_entry(tmp_path, capsys):
    args = ["--root", str(tmp_path), "--profile", "toy_unlabeled", "--num-images", "2"]
    assert toy.main(args) == 0
    out = capsys.readouterr().out
    assert "toy_unlabeled dataset" in out and "images/train/" in out and "2 files" in out


def test_the_config_sets_the_count_on_the_registered_root(tmp_path, isolated_catalogs):
    from d2ext.engine import load_cfg

    toy.register_toy_unlabeled(str(tmp_path))
    load_cfg("", ["D2EXT.TOY_UNLABELED_NUM_IMAGES", "3"])
    assert registered_spec(toy.TOY_UNLABELED_NAME) == dict(
        registered_spec(toy.TOY_UNLABELED_NAME), root=str(tmp_path), num_images=3
    )
    load_cfg("", [])  # the default count again
    assert registered_spec(toy.TOY_UNLABELED_NAME)["num_images"] == 5000
