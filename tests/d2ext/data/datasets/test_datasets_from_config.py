"""Datasets registered from cfg.D2EXT.DATASETS (python lists and yaml files)."""

import pytest

import d2ext  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.config import get_cfg
from d2ext.data.datasets import DatasetError, register_from_config, toy


def _entries(root):
    p = toy.toy_paths(root, "val")
    return [
        {
            "NAME": "cfg_inst",
            "TYPE": "coco_instances",
            "JSON": p["instances_json"],
            "IMAGE_ROOT": p["image_root"],
        },
        {
            "NAME": "cfg_pan",
            "TYPE": "coco_panoptic",
            "PANOPTIC_JSON": p["panoptic_json"],
            "PANOPTIC_ROOT": p["panoptic_root"],
            "IMAGE_ROOT": p["image_root"],
            "SEM_SEG_ROOT": p["sem_seg_root"],
            "INSTANCES_JSON": p["instances_json"],
        },
        {
            "NAME": "cfg_sem",
            "TYPE": "sem_seg",
            "IMAGE_ROOT": p["image_root"],
            "LABEL_ROOT": p["sem_seg_root"],
            "CLASSES": ["disc", "block", "bar", "grass", "water"],
            "IMAGE_EXT": ".png",
        },
    ]


def _cfg(entries):
    cfg = get_cfg()
    cfg.D2EXT.DATASETS = entries
    return cfg


def test_registers_each_type_and_repeats_as_a_no_op(toy_root):
    cfg = _cfg(_entries(toy_root))
    assert register_from_config(cfg) == ["cfg_inst", "cfg_pan", "cfg_sem"]
    assert register_from_config(cfg) == ["cfg_inst", "cfg_pan", "cfg_sem"]  # every process does it
    assert len(DatasetCatalog.get("cfg_inst")) == 10
    pan = DatasetCatalog.get("cfg_pan")
    assert {"pan_seg_file_name", "sem_seg_file_name", "annotations"} <= set(pan[0])
    assert MetadataCatalog.get("cfg_pan").stuff_classes == [
        "disc",
        "block",
        "bar",
        "grass",
        "water",
    ]
    sem = DatasetCatalog.get("cfg_sem")
    assert len(sem) == 10 and MetadataCatalog.get("cfg_sem").ignore_label == 255


def test_another_spec_under_a_registered_name(toy_root):
    entries = _entries(toy_root)
    register_from_config(_cfg(entries))
    entries[0] = dict(entries[0], IMAGE_ROOT="/elsewhere")
    with pytest.raises(
        DatasetError, match=r"D2EXT\.DATASETS\[0\]\.NAME: dataset 'cfg_inst' is already registered"
    ):
        register_from_config(_cfg(entries))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda e: e[1].update(TYPE="coco_panoptc"),
            r"D2EXT\.DATASETS\[1\]\.TYPE: unknown type 'coco_panoptc'",
        ),
        (lambda e: e[1].pop("TYPE"), r"D2EXT\.DATASETS\[1\]\.TYPE is missing"),
        (lambda e: e[0].pop("IMAGE_ROOT"), r"D2EXT\.DATASETS\[0\]\.IMAGE_ROOT is missing"),
        (
            lambda e: e[2].update(LABELS="x"),
            r"D2EXT\.DATASETS\[2\]\.LABELS: unknown key for TYPE 'sem_seg'",
        ),
        (
            lambda e: e[0].update(SEM_SEG_ROOT="x"),
            r"D2EXT\.DATASETS\[0\]\.SEM_SEG_ROOT: unknown key",
        ),
        (
            lambda e: e[2].update(CLASSES="disc"),
            r"D2EXT\.DATASETS\[2\]\.CLASSES must be a non-empty list",
        ),
        (
            lambda e: e[2].update(IGNORE_LABEL="255"),
            r"D2EXT\.DATASETS\[2\]\.IGNORE_LABEL must be an int",
        ),
        (lambda e: e[0].pop("NAME"), r"D2EXT\.DATASETS\[0\]\.NAME is missing"),
        (lambda e: e.append("cfg_x"), r"D2EXT\.DATASETS\[3\] must be a dict"),
    ],
)
def test_bad_entries_name_the_key(tmp_path, change, message):
    entries = _entries(str(tmp_path))
    change(entries)
    with pytest.raises(DatasetError, match=message):
        register_from_config(_cfg(entries))
    assert "cfg_inst" not in DatasetCatalog.list()  # nothing registered from a bad list


def test_list_of_dicts_from_a_yaml_file(toy_root, tmp_path):
    p = toy.toy_paths(toy_root, "val")
    path = tmp_path / "user_datasets.yaml"
    path.write_text(
        "D2EXT:\n"
        "  DATASETS:\n"
        "    - {NAME: yaml_inst, TYPE: coco_instances,\n"
        f"       JSON: {p['instances_json']}, IMAGE_ROOT: {p['image_root']}}}\n"
        "    - NAME: yaml_sem\n"
        "      TYPE: sem_seg\n"
        f"      IMAGE_ROOT: {p['image_root']}\n"
        f"      LABEL_ROOT: {p['sem_seg_root']}\n"
        "      CLASSES: [disc, block, bar, grass, water]\n"
        "      IMAGE_EXT: .png\n"
        "      IGNORE_LABEL: 255\n"
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    cfg.freeze()
    assert register_from_config(cfg) == ["yaml_inst", "yaml_sem"]
    assert len(DatasetCatalog.get("yaml_inst")) == 10
    assert MetadataCatalog.get("yaml_sem").stuff_classes[-1] == "water"
