"""Builtin names: they replace detectron2's, register without files, explain missing
files with the expected layout, and load detectron2's folder layouts."""

import re
import sys
import types

import numpy as np
import pytest

import d2ext  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from d2ext.data.datasets import DatasetError, register_all_builtin, registered_spec

COCO_NAMES = [
    f"coco_2017_{split}{suffix}"
    for split in ("train", "val")
    for suffix in ("", "_panoptic", "_panoptic_separated")
]
ADE_NAMES = ["ade20k_sem_seg_train", "ade20k_sem_seg_val"]


def test_registers_every_name_without_files_and_idempotently(tmp_path):
    root = tmp_path / "absent"
    register_all_builtin(str(root))
    register_all_builtin(str(root))
    assert not root.exists()
    for name in COCO_NAMES + ADE_NAMES + ["toy_instances_train", "toy_panoptic_val"]:
        spec = registered_spec(name)  # d2ext's registration replaced detectron2's
        assert spec is not None and spec["root"] == str(root), name
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    assert len(meta.thing_classes) == 80 and len(meta.stuff_classes) == 133
    assert meta.sem_seg_root.endswith("panoptic_semseg_val2017")
    assert MetadataCatalog.get("coco_2017_val_panoptic_separated").stuff_classes[0] == "things"
    assert len(MetadataCatalog.get("ade20k_sem_seg_val").stuff_classes) == 150
    # another root re-points the names
    register_all_builtin(str(tmp_path / "elsewhere"))
    assert registered_spec("coco_2017_val")["root"] == str(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    "name, missing, tree",
    [
        (
            "coco_2017_val",
            "coco/annotations/instances_val2017.json",
            "panoptic_stuff_{train,val}2017/",
        ),
        (
            "coco_2017_train_panoptic",
            "coco/annotations/panoptic_train2017.json",
            "panoptic_semseg_",
        ),
        ("ade20k_sem_seg_val", "ADEChallengeData2016/images/validation", "annotations_detectron2/"),
    ],
)
def test_loading_without_files_names_the_path_and_the_layout(tmp_path, name, missing, tree):
    register_all_builtin(str(tmp_path))
    with pytest.raises(DatasetError) as info:
        DatasetCatalog.get(name)
    message = str(info.value)
    assert f"{name!r} needs {tmp_path}/{missing}, which does not exist" in message
    assert "Expected layout" in message and tree in message


def _write_coco(root, write_json, write_png):
    """A one-image COCO 2017 val in detectron2's layout, panoptic files included."""
    coco = root / "coco"
    write_png(coco / "val2017" / "000000000139.jpg", np.zeros((4, 4, 3)))
    image = {"id": 139, "file_name": "000000000139.jpg", "height": 4, "width": 4}
    things = [dict(c, supercategory="x") for c in COCO_CATEGORIES if c["isthing"]]
    write_json(
        coco / "annotations" / "instances_val2017.json",
        {
            "images": [image],
            "categories": things,
            "annotations": [
                {
                    "id": 1,
                    "image_id": 139,
                    "category_id": 90,
                    "bbox": [0, 0, 2, 2],
                    "iscrowd": 0,
                    "area": 4,
                    "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]],
                }
            ],
        },
    )
    pan = np.full((4, 4), 200, np.int64)
    pan[:2, :2] = 7
    write_png(
        coco / "panoptic_val2017" / "000000000139.png",
        np.stack([pan % 256, pan // 256, 0 * pan], -1),
    )
    write_json(
        coco / "annotations" / "panoptic_val2017.json",
        {
            "images": [image],
            "categories": COCO_CATEGORIES,
            "annotations": [
                {
                    "image_id": 139,
                    "file_name": "000000000139.png",
                    "segments_info": [
                        {"id": 7, "category_id": 90, "iscrowd": 0, "area": 4, "bbox": [0, 0, 2, 2]},
                        {
                            "id": 200,
                            "category_id": 200,
                            "iscrowd": 0,
                            "area": 12,
                            "bbox": [0, 0, 4, 4],
                        },
                    ],
                }
            ],
        },
    )
    write_png(coco / "panoptic_semseg_val2017" / "000000000139.png", np.where(pan == 7, 79, 132))
    write_png(coco / "panoptic_stuff_val2017" / "000000000139.png", np.where(pan == 7, 0, 53))


def test_loads_detectron2_coco_layout(tmp_path, write_json, write_png):
    _write_coco(tmp_path, write_json, write_png)
    register_all_builtin(str(tmp_path))
    (inst,) = DatasetCatalog.get("coco_2017_val")
    assert inst["annotations"][0]["category_id"] == 79  # toothbrush, the 80th thing
    (pan,) = DatasetCatalog.get("coco_2017_val_panoptic")
    assert [(s["category_id"], s["isthing"]) for s in pan["segments_info"]] == [
        (79, True),
        (132, False),
    ]
    assert pan["annotations"][0]["category_id"] == 79
    assert pan["sem_seg_file_name"].endswith("panoptic_semseg_val2017/000000000139.png")
    (sep,) = DatasetCatalog.get("coco_2017_val_panoptic_separated")
    assert sep["sem_seg_file_name"].endswith("panoptic_stuff_val2017/000000000139.png")
    assert (
        MetadataCatalog.get("coco_2017_val_panoptic_separated").stuff_dataset_id_to_contiguous_id[
            200
        ]
        == 53
    )


def test_cityscapes_is_registered_when_its_module_is_there(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("d2ext.data.datasets.cityscapes")
    fake.register_all_cityscapes = calls.append
    monkeypatch.setitem(sys.modules, "d2ext.data.datasets.cityscapes", fake)
    register_all_builtin(str(tmp_path))
    assert calls == [str(tmp_path)]
    monkeypatch.setitem(sys.modules, "d2ext.data.datasets.cityscapes", None)  # "not there"
    register_all_builtin(str(tmp_path / "other"))  # no error
    assert re.match(r".*other$", registered_spec("toy_sem_seg_val")["root"])
