"""User datasets: valid loading, and one tiny broken dataset per error the loaders must catch."""

import json
import logging
import os
import re

import numpy as np
import pycocotools.mask as mask_util
import pytest

import d2ext  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from d2ext.data.datasets import (
    DatasetError,
    load_coco_instances,
    load_coco_panoptic,
    load_sem_seg,
    register_coco_instances,
    register_coco_panoptic,
    register_sem_seg,
)


def _esc(text):
    return re.escape(str(text))


# ---------------------------------------------------------------------------- COCO instances
@pytest.fixture
def coco(tmp_path, write_json, write_png):
    """3 images (the third without annotations); categories with non-contiguous ids 3 and 7."""
    for name in ("a.png", "b.png", "c.png"):
        write_png(tmp_path / "images" / name, np.zeros((8, 10, 3)))
    crowd = {"size": [8, 10], "counts": [10, 20, 50]}  # uncompressed RLE
    data = {
        "images": [
            {"id": 2, "file_name": "b.png", "height": 8, "width": 10},
            {"id": 1, "file_name": "a.png", "height": 8, "width": 10},
            {"id": 3, "file_name": "c.png", "height": 8, "width": 10},
        ],
        "annotations": [
            {
                "id": 11,
                "image_id": 1,
                "category_id": 7,
                "bbox": [1, 1, 4, 4],
                "iscrowd": 0,
                "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]],
                "area": 16,
            },
            {
                "id": 12,
                "image_id": 1,
                "category_id": 3,
                "bbox": [0, 0, 2, 8],
                "iscrowd": 1,
                "segmentation": crowd,
                "area": 20,
            },
            {
                "id": 13,
                "image_id": 2,
                "category_id": 3,
                "bbox": [2, 2, 3, 3],
                "iscrowd": 0,
                "segmentation": [[2, 2, 5, 2, 5, 5]],
                "area": 4.5,
            },
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
    }
    json_file = write_json(tmp_path / "instances.json", data)
    return {"json": json_file, "images": str(tmp_path / "images"), "data": data, "dir": tmp_path}


def _rewrite(coco, write_json, change):
    data = json.loads(json.dumps(coco["data"]))
    change(data)
    return write_json(coco["json"], data)


def test_coco_instances_load_and_lazy_metadata(coco):
    register_coco_instances("user_coco", coco["json"], coco["images"])
    meta = MetadataCatalog.get("user_coco")
    assert meta.evaluator_type == "coco" and meta.get("thing_classes") is None  # not read yet
    dicts = DatasetCatalog.get("user_coco")
    assert [d["image_id"] for d in dicts] == [1, 2, 3]
    assert dicts[0]["file_name"] == os.path.join(coco["images"], "a.png")
    assert (dicts[0]["height"], dicts[0]["width"]) == (8, 10)
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1, 0]  # 7 -> 1, 3 -> 0
    assert [a["id"] for a in dicts[0]["annotations"]] == [11, 12]
    assert dicts[0]["annotations"][0]["bbox_mode"] == BoxMode.XYWH_ABS
    crowd = dicts[0]["annotations"][1]["segmentation"]
    assert isinstance(crowd["counts"], bytes) and mask_util.area(crowd) == 20  # compressed
    assert dicts[2]["annotations"] == []  # kept: detectron2's train loader filters empty images
    assert meta.thing_classes == ["three", "seven"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}


def test_register_is_idempotent_and_rejects_another_spec(coco):
    register_coco_instances("user_twice", coco["json"], coco["images"])
    register_coco_instances("user_twice", coco["json"], coco["images"])  # no-op
    with pytest.raises(DatasetError, match="'user_twice' is already registered"):
        register_coco_instances("user_twice", coco["json"], coco["dir"])
    with pytest.raises(DatasetError, match="'coco_2017_val' is already registered"):
        register_coco_instances("coco_2017_val", coco["json"], coco["images"])


def test_a_name_registered_outside_d2ext_is_not_taken_over(coco):
    DatasetCatalog.register("user_foreign", lambda: [])
    with pytest.raises(DatasetError, match="'user_foreign' is already registered outside d2ext"):
        register_coco_instances("user_foreign", coco["json"], coco["images"])
    # re-registered behind d2ext's back: not mistaken for d2ext's identical registration
    register_coco_instances("user_swapped", coco["json"], coco["images"])
    DatasetCatalog.remove("user_swapped")
    DatasetCatalog.register("user_swapped", lambda: [])
    with pytest.raises(DatasetError, match="outside d2ext"):
        register_coco_instances("user_swapped", coco["json"], coco["images"])


def test_registering_touches_no_disk_and_loading_names_the_missing_file(tmp_path):
    json_file = tmp_path / "nowhere" / "instances.json"
    register_coco_instances("user_absent", str(json_file), str(tmp_path / "images"))
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(DatasetError, match=_esc(json_file) + ": file does not exist"):
        DatasetCatalog.get("user_absent")


def test_malformed_json(coco):
    with open(coco["json"], "w") as f:
        f.write('{"images": [}')
    with pytest.raises(DatasetError, match=_esc(coco["json"]) + ": malformed JSON at line 1"):
        load_coco_instances(coco["json"], coco["images"])


def test_json_missing_a_top_level_key(coco, write_json):
    _rewrite(coco, write_json, lambda d: d.pop("categories"))
    with pytest.raises(
        DatasetError,
        match=_esc(coco["json"]) + r": missing required top-level key\(s\) \['categories'\]",
    ):
        load_coco_instances(coco["json"], coco["images"])


def test_missing_image_file(coco):
    os.remove(os.path.join(coco["images"], "b.png"))
    with pytest.raises(
        DatasetError, match=_esc(coco["json"]) + ": image id 2: image file .*b.png does not exist"
    ):
        load_coco_instances(coco["json"], coco["images"])


def test_missing_image_folder(coco):
    with pytest.raises(
        DatasetError, match="image id 1: image file .*a.png does not exist .no folder"
    ):
        load_coco_instances(coco["json"], os.path.join(coco["images"], "nope"))


def test_unknown_category(coco, write_json):
    _rewrite(coco, write_json, lambda d: d["annotations"][2].update(category_id=99))
    with pytest.raises(
        DatasetError,
        match=_esc(coco["json"])
        + r": annotation id 13 \(image id 2\): category_id 99 is not in 'categories'",
    ):
        load_coco_instances(coco["json"], coco["images"])


@pytest.mark.parametrize("polygon, n", [([1, 1, 5, 1], 4), ([1, 1, 5, 1, 5, 5, 1], 7), ([], 0)])
def test_invalid_polygon(coco, write_json, polygon, n):
    _rewrite(
        coco,
        write_json,
        lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1, 5, 5], polygon]),
    )
    with pytest.raises(
        DatasetError,
        match=_esc(coco["json"])
        + rf": annotation id 11 \(image id 1\): polygon 1 has {n} coordinates",
    ):
        load_coco_instances(coco["json"], coco["images"])


def test_annotation_of_an_unknown_image(coco, write_json):
    _rewrite(coco, write_json, lambda d: d["annotations"][1].update(image_id=42))
    with pytest.raises(
        DatasetError, match=r"annotation id 12 \(image id 42\): its image id is not in 'images'"
    ):
        load_coco_instances(coco["json"], coco["images"])


def test_bad_bbox(coco, write_json):
    _rewrite(coco, write_json, lambda d: d["annotations"][2].update(bbox=[1, 2, 3]))
    with pytest.raises(
        DatasetError, match=r"annotation id 13 .*bbox must be \[x, y, width, height\]"
    ):
        load_coco_instances(coco["json"], coco["images"])


def test_registered_metadata_must_match_the_json(coco):
    register_coco_instances(
        "user_wrong_map",
        coco["json"],
        coco["images"],
        metadata={
            "thing_dataset_id_to_contiguous_id": {3: 0, 7: 1, 9: 2},
            "thing_classes": ["a", "b", "c"],
        },
    )
    with pytest.raises(
        DatasetError, match="thing_dataset_id_to_contiguous_id.* was registered with"
    ):
        DatasetCatalog.get("user_wrong_map")


# ---------------------------------------------------------------------------- COCO panoptic
@pytest.fixture
def panoptic(tmp_path, write_json, write_png):
    """2 images of 4x4: a thing (id 2) on stuff (id 1, listed first to test the ordering)."""
    cats = [{"id": 1, "name": "sky", "isthing": 0}, {"id": 2, "name": "cat", "isthing": 1}]
    images, annotations, instances = [], [], []
    for image_id in (1, 2):
        name = f"{image_id:03d}"
        write_png(tmp_path / "images" / f"{name}.jpg", np.zeros((4, 4, 3)))  # (PNG bytes are fine)
        pan = np.full((4, 4), 100, np.int64)
        pan[:2, :2] = 5
        write_png(
            tmp_path / "pan" / f"{name}.png",
            np.stack([pan % 256, pan // 256 % 256, pan // 65536], -1),
        )
        write_png(tmp_path / "sem" / f"{name}.png", np.where(pan == 5, 0, 1))
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": 4, "width": 4})
        annotations.append(
            {
                "image_id": image_id,
                "file_name": f"{name}.png",
                "segments_info": [
                    {"id": 5, "category_id": 2, "iscrowd": 0, "area": 4, "bbox": [0, 0, 2, 2]},
                    {"id": 100, "category_id": 1, "iscrowd": 0, "area": 12, "bbox": [0, 0, 4, 4]},
                ],
            }
        )
        instances.append(
            {
                "id": 10 + image_id,
                "image_id": image_id,
                "category_id": 2,
                "iscrowd": 0,
                "bbox": [0, 0, 2, 2],
                "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]],
                "area": 4,
            }
        )
    data = {"images": images, "annotations": annotations, "categories": cats}
    inst = {"images": images, "annotations": instances, "categories": [cats[1]]}
    return {
        "json": write_json(tmp_path / "panoptic.json", data),
        "instances": write_json(tmp_path / "instances.json", inst),
        "pan": str(tmp_path / "pan"),
        "sem": str(tmp_path / "sem"),
        "images": str(tmp_path / "images"),
        "data": data,
    }


def test_coco_panoptic_load(panoptic):
    register_coco_panoptic(
        "user_pan",
        panoptic["json"],
        panoptic["pan"],
        panoptic["images"],
        sem_seg_root=panoptic["sem"],
        instances_json=panoptic["instances"],
    )
    dicts = DatasetCatalog.get("user_pan")
    meta = MetadataCatalog.get("user_pan")
    assert len(dicts) == 2
    d = dicts[0]
    assert d["pan_seg_file_name"] == os.path.join(panoptic["pan"], "001.png")
    assert d["sem_seg_file_name"] == os.path.join(panoptic["sem"], "001.png")
    assert [(s["id"], s["category_id"], s["isthing"]) for s in d["segments_info"]] == [
        (5, 0, True),
        (100, 1, False),
    ]
    assert [(a["id"], a["category_id"]) for a in d["annotations"]] == [(11, 0)]
    # things first: the thing (dataset id 2) gets contiguous id 0, the stuff (id 1) gets 1
    assert meta.thing_classes == ["cat"] and meta.stuff_classes == ["cat", "sky"]
    assert meta.thing_dataset_id_to_contiguous_id == {2: 0}
    assert meta.stuff_dataset_id_to_contiguous_id == {2: 0, 1: 1}
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.json_file == panoptic["instances"]


def test_panoptic_without_optional_parts(panoptic):
    dicts = load_coco_panoptic(panoptic["json"], panoptic["pan"], panoptic["images"])
    assert "sem_seg_file_name" not in dicts[0] and "annotations" not in dicts[0]


def test_panoptic_segment_with_unknown_category(panoptic, write_json):
    panoptic["data"]["annotations"][1]["segments_info"][1]["category_id"] = 99
    write_json(panoptic["json"], panoptic["data"])
    with pytest.raises(
        DatasetError,
        match=_esc(panoptic["json"])
        + r": image id 2, segment id 100: category_id 99 is not in 'categories'",
    ):
        load_coco_panoptic(panoptic["json"], panoptic["pan"], panoptic["images"])


def test_panoptic_repeated_segment_id(panoptic, write_json):
    panoptic["data"]["annotations"][0]["segments_info"][1]["id"] = 5
    write_json(panoptic["json"], panoptic["data"])
    with pytest.raises(DatasetError, match=r"image id 1: segment id 5 is missing or repeated"):
        load_coco_panoptic(panoptic["json"], panoptic["pan"], panoptic["images"])


def test_panoptic_missing_png_and_sem_seg_file(panoptic):
    os.remove(os.path.join(panoptic["sem"], "002.png"))
    with pytest.raises(
        DatasetError,
        match=_esc(panoptic["json"]) + ": image id 2: semantic label PNG .*002.png does not exist",
    ):
        load_coco_panoptic(
            panoptic["json"], panoptic["pan"], panoptic["images"], sem_seg_root=panoptic["sem"]
        )
    os.remove(os.path.join(panoptic["pan"], "001.png"))
    with pytest.raises(
        DatasetError,
        match=_esc(panoptic["json"]) + ": image id 1: panoptic PNG .*001.png does not exist",
    ):
        load_coco_panoptic(panoptic["json"], panoptic["pan"], panoptic["images"])


def test_panoptic_images_without_annotation_are_skipped_with_a_warning(
    panoptic, write_json, caplog
):
    panoptic["data"]["annotations"].pop(1)
    write_json(panoptic["json"], panoptic["data"])
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_panoptic(panoptic["json"], panoptic["pan"], panoptic["images"])
    assert [d["image_id"] for d in dicts] == [1]
    assert "1 of 2 images have no panoptic annotation" in caplog.text


def test_panoptic_instances_json_must_cover_every_image(panoptic, write_json):
    inst = json.load(open(panoptic["instances"]))
    inst["images"] = inst["images"][:1]
    inst["annotations"] = inst["annotations"][:1]
    write_json(panoptic["instances"], inst)
    with pytest.raises(DatasetError, match=_esc(panoptic["instances"]) + ": has no image id 2"):
        load_coco_panoptic(
            panoptic["json"],
            panoptic["pan"],
            panoptic["images"],
            instances_json=panoptic["instances"],
        )


def test_panoptic_json_missing_keys(panoptic, write_json):
    write_json(panoptic["json"], {"annotations": [], "categories": []})
    with pytest.raises(DatasetError, match=r"missing required top-level key\(s\) \['images'\]"):
        load_coco_panoptic(panoptic["json"], panoptic["pan"], panoptic["images"])


# ---------------------------------------------------------------------------- semantic
@pytest.fixture
def semseg(tmp_path, write_png):
    for key in ("a", "sub/b"):
        write_png(tmp_path / "img" / f"{key}.jpg", np.zeros((6, 5, 3)))
        write_png(tmp_path / "lbl" / f"{key}.png", np.zeros((6, 5)))
    return {"images": str(tmp_path / "img"), "labels": str(tmp_path / "lbl")}


def test_sem_seg_load(semseg):
    register_sem_seg(
        "user_sem", semseg["images"], semseg["labels"], ["road", "car"], ignore_label=255
    )
    dicts = DatasetCatalog.get("user_sem")
    assert [d["image_id"] for d in dicts] == ["a", os.path.join("sub", "b")]
    assert dicts[1]["sem_seg_file_name"] == os.path.join(semseg["labels"], "sub", "b.png")
    assert (dicts[0]["height"], dicts[0]["width"]) == (6, 5)
    meta = MetadataCatalog.get("user_sem")
    assert meta.stuff_classes == ["road", "car"] and meta.ignore_label == 255
    assert meta.evaluator_type == "sem_seg" and meta.sem_seg_root == semseg["labels"]


def test_sem_seg_image_without_label(semseg):
    os.remove(os.path.join(semseg["labels"], "sub", "b.png"))
    image = os.path.join(semseg["images"], "sub", "b.jpg")
    with pytest.raises(
        DatasetError, match=_esc(image) + r": image \(id 'sub/b'\) has no label file"
    ):
        load_sem_seg(semseg["images"], semseg["labels"])


def test_sem_seg_label_without_image(semseg):
    os.remove(os.path.join(semseg["images"], "a.jpg"))
    label = os.path.join(semseg["labels"], "a.png")
    with pytest.raises(DatasetError, match=_esc(label) + r": label file \(id 'a'\) has no image"):
        load_sem_seg(semseg["images"], semseg["labels"], image_ext="jpg")


def test_sem_seg_registration_checks_its_arguments(semseg):
    with pytest.raises(DatasetError, match="classes must be a non-empty list"):
        register_sem_seg("user_sem_bad", semseg["images"], semseg["labels"], "road")
    with pytest.raises(DatasetError, match="ignore_label 1 is also the id of class 'car'"):
        register_sem_seg(
            "user_sem_bad", semseg["images"], semseg["labels"], ["road", "car"], ignore_label=1
        )
    with pytest.raises(DatasetError, match="no '\\*.png' images found"):
        load_sem_seg(semseg["images"], semseg["labels"], image_ext=".png")
