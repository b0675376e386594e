"""Cityscapes loaders and registration on a tiny Cityscapes-layout fixture."""
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from cityscapesscripts.helpers.labels import name2label
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

import d2ext  # noqa: F401
from d2ext.data.datasets import cityscapes as cs
from d2ext.data.datasets.catalog import get_datasets_root
from d2ext.data.datasets.checks import DatasetError
from tests.fixtures.cityscapes_fixture import CAR, IMAGES, PERSON, draw, make_cityscapes

NAMES = [
    *(f"cityscapes_fine_{task}_{split}" for task in ("instance_seg", "sem_seg") for split in ("train", "val", "test")),
    "cityscapes_fine_panoptic_train",
    "cityscapes_fine_panoptic_val",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_cityscapes(str(tmp_path_factory.mktemp("cs")), splits=("val", "train"))


@pytest.fixture()
def registered(root):
    """register_all_cityscapes(root) for one test, then back to the session's root."""
    cs.register_all_cityscapes(root)
    yield
    cs.register_all_cityscapes(get_datasets_root())


def _dirs(root, split="val"):
    base = os.path.join(root, "cityscapes")
    return os.path.join(base, "leftImg8bit", split), os.path.join(base, "gtFine", split)


def test_register_all_replaces_detectron2_names_without_touching_disk(tmp_path):
    import detectron2.data.datasets.builtin  # noqa: F401  (detectron2's own registrations)

    missing = str(tmp_path / "nothing_here")
    cs.register_all_cityscapes(missing)
    try:
        for name in NAMES:
            assert name in DatasetCatalog.list()
            meta = MetadataCatalog.get(name)
            assert meta.evaluator_type.startswith("cityscapes_")
            assert meta.image_root.startswith(missing)
        assert not os.path.exists(missing)
        with pytest.raises(FileNotFoundError, match="leftImg8bit/val.*expected Cityscapes layout"):
            DatasetCatalog.get("cityscapes_fine_instance_seg_val")
        with pytest.raises(FileNotFoundError, match="cityscapes_panoptic_val.json"):
            DatasetCatalog.get("cityscapes_fine_panoptic_val")
    finally:
        cs.register_all_cityscapes(get_datasets_root())


def test_metadata_from_cityscapesscripts(registered):
    inst = MetadataCatalog.get("cityscapes_fine_instance_seg_val")
    assert inst.thing_classes == ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert inst.thing_colors[2] == name2label["car"].color
    assert inst.thing_dataset_id_to_contiguous_id[26] == 2
    assert inst.gt_dir.endswith(os.path.join("gtFine", "val"))

    sem = MetadataCatalog.get("cityscapes_fine_sem_seg_val")
    assert len(sem.stuff_classes) == 19 and sem.stuff_classes[0] == "road" and sem.stuff_classes[-1] == "bicycle"
    assert sem.stuff_colors[10] == name2label["sky"].color
    assert sem.ignore_label == 255 and sem.evaluator_type == "cityscapes_sem_seg"

    pan = MetadataCatalog.get("cityscapes_fine_panoptic_val")
    assert pan.thing_classes == pan.stuff_classes == sem.stuff_classes
    assert sorted(pan.thing_dataset_id_to_contiguous_id.values()) == list(range(11, 19))
    assert sorted(pan.stuff_dataset_id_to_contiguous_id.values()) == list(range(11))
    assert pan.label_divisor == 1000 and pan.evaluator_type == "cityscapes_panoptic_seg"


def test_instances_match_the_drawn_objects(registered):
    dicts = DatasetCatalog.get("cityscapes_fine_instance_seg_val")
    assert [d["image_id"] for d in dicts] == [core for core, _ in IMAGES["val"]]
    d = dicts[0]
    assert (d["height"], d["width"]) == (64, 128) and os.path.isfile(d["file_name"])
    _, instance_ids = draw(IMAGES["val"][0][1], seed=0)
    by_id = {a["id"]: a for a in d["annotations"]}
    # 2 cars, 2 persons (one below the evaluation's size minimum), 1 bicycle crowd
    assert sorted(by_id) == [33, 24000, 24001, 26000, 26001]
    assert by_id[33]["iscrowd"] == 1 and by_id[33]["category_id"] == 7
    car = by_id[26000]
    assert car["category_id"] == 2 and car["iscrowd"] == 0
    assert car["bbox_mode"] == BoxMode.XYWH_ABS and car["bbox"] == [10, 40, 20, 16]
    np.testing.assert_array_equal(mask_util.decode(car["segmentation"]).astype(bool), instance_ids == 26000)
    # the caravan of the second image is a thing Cityscapes does not evaluate
    assert all(a["id"] // 1000 != 29 for a in dicts[1]["annotations"])


def test_semantic_dicts(registered):
    dicts = DatasetCatalog.get("cityscapes_fine_sem_seg_val")
    assert len(dicts) == 3
    d = dicts[0]
    labels = np.asarray(Image.open(d["sem_seg_file_name"]))
    assert (d["height"], d["width"]) == labels.shape
    assert labels[45, 15] == name2label["car"].trainId
    assert labels[63, 0] == 255  # unlabeled
    assert labels[37, 110] == 255  # parking: ignored in evaluation


def test_panoptic_dicts(registered):
    dicts = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    assert [d["image_id"] for d in dicts] == [core for core, _ in IMAGES["val"]]
    d = dicts[0]
    assert os.path.isfile(d["pan_seg_file_name"]) and d["sem_seg_file_name"].endswith("_gtFine_labelTrainIds.png")
    segments = {s["id"]: s for s in d["segments_info"]}
    assert segments[26000]["category_id"] == name2label["car"].trainId and segments[26000]["isthing"]
    assert segments[7]["category_id"] == 0 and not segments[7]["isthing"]  # road
    assert segments[33]["iscrowd"] == 1
    rgb = np.asarray(Image.open(d["pan_seg_file_name"])).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
    assert (ids == 26000).sum() == segments[26000]["area"]


def test_train_split(registered):
    assert len(DatasetCatalog.get("cityscapes_fine_instance_seg_train")) == 1
    assert len(DatasetCatalog.get("cityscapes_fine_panoptic_train")) == 1


def test_missing_ground_truth_names_the_file(root, tmp_path):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(os.path.join(root, "cityscapes"), os.path.join(copy, "cityscapes"))
    image_dir, gt_dir = _dirs(copy)
    victim = os.path.join(gt_dir, "beta", "beta_000000_000123_gtFine_labelTrainIds.png")
    os.remove(victim)
    with pytest.raises(DatasetError, match="beta_000000_000123_gtFine_labelTrainIds.png"):
        cs.load_cityscapes_semantic(image_dir, gt_dir)
    assert len(cs.load_cityscapes_instances(image_dir, gt_dir)) == 3


def test_constants():
    assert [l.name for l in cs.CITYSCAPES_THING_LABELS][0] == "person"
    assert CAR in {l.id for l in cs.CITYSCAPES_THING_LABELS} and PERSON in {l.id for l in cs.CITYSCAPES_THING_LABELS}


def test_parallel_loading_keeps_order():
    items = list(range(40))
    assert cs._parallel_map(lambda x: x * x, items) == [x * x for x in items]
