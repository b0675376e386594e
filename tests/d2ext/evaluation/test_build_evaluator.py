"""build_evaluator picks evaluators from metadata and model outputs only."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator

import d2ext  # noqa: F401
from d2ext.config import get_cfg
from d2ext.data.datasets.catalog import unregister_dataset
from d2ext.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    build_evaluator,
    register_evaluator_type,
)
from d2ext.evaluation import build as build_module
from d2ext.model_io import MODEL_IO, register_model_io

NAME = "_test_build_evaluator_ds"
THINGS = ["cat", "dog"]
STUFF = ["grass", "sky"]


@pytest.fixture()
def dataset(tmp_path):
    """Registers NAME (fake files) with the metadata a test passes; removed afterwards."""
    coco_json = tmp_path / "instances.json"
    coco_json.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
        "annotations": [],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }))
    dicts = [{"file_name": "a.png", "image_id": 1, "height": 4, "width": 4, "sem_seg_file_name": "a_sem.png"}]

    def register(**meta):
        meta = {k: (str(coco_json) if v == "JSON" else v) for k, v in meta.items()}
        DatasetCatalog.register(NAME, lambda: dicts)
        MetadataCatalog.get(NAME).set(**meta)

    yield register
    unregister_dataset(NAME)


@pytest.fixture(scope="module", autouse=True)
def panoptic_only_model():
    register_model_io("_test_panoptic_only", lambda cfg: frozenset(), lambda cfg: frozenset({"panoptic_seg"}))
    yield
    MODEL_IO.remove("_test_panoptic_only")


def _cfg(meta_arch):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = meta_arch
    return cfg


def _types(evaluators):
    return [type(e) for e in evaluators._evaluators]


PANOPTIC_META = dict(
    thing_classes=THINGS,
    stuff_classes=THINGS + STUFF,
    thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
    stuff_dataset_id_to_contiguous_id={10: 2, 11: 3},  # detectron2's style: stuff only
    ignore_label=255,
    panoptic_root="/nowhere",
    panoptic_json="/nowhere.json",
)


def test_coco_builds_the_official_coco_evaluator(dataset):
    dataset(evaluator_type="coco", thing_classes=THINGS, json_file="JSON")
    (evaluator,) = build_evaluator(_cfg("GeneralizedRCNN"), NAME)._evaluators
    assert isinstance(evaluator, COCOEvaluator)
    assert evaluator._use_fast_impl is False  # pycocotools, no compiled ops
    assert evaluator._tasks is None  # bbox, plus segm when masks are predicted


def test_sem_seg(dataset):
    dataset(evaluator_type="sem_seg", stuff_classes=STUFF, ignore_label=255)
    assert _types(build_evaluator(_cfg("SemanticSegmentor"), NAME)) == [build_module._SemSegEvaluator]
    assert issubclass(build_module._SemSegEvaluator, SemSegEvaluator)


@pytest.mark.parametrize(
    "meta_arch, extra, expected",
    [
        (
            "PanopticFPN",
            dict(json_file="JSON", sem_seg_root="/s"),
            [COCOPanopticEvaluator, COCOEvaluator, SemSegEvaluator],
        ),
        ("PanopticFPN", {}, [COCOPanopticEvaluator]),  # no instance json, no semantic labels
        ("_test_panoptic_only", dict(json_file="JSON", sem_seg_root="/s"), [COCOPanopticEvaluator]),
        ("GeneralizedRCNN", dict(json_file="JSON"), [COCOEvaluator]),
        ("SemanticSegmentor", dict(sem_seg_root="/s"), [SemSegEvaluator]),
    ],
)
def test_coco_panoptic_follows_outputs_and_annotations(dataset, meta_arch, extra, expected):
    dataset(evaluator_type="coco_panoptic_seg", **PANOPTIC_META, **extra)
    got = build_evaluator(_cfg(meta_arch), NAME)._evaluators
    assert len(got) == len(expected) and all(isinstance(e, t) for e, t in zip(got, expected))


@pytest.mark.parametrize(
    "meta_arch, expected",
    [
        ("PanopticFPN", [COCOPanopticEvaluator, CityscapesInstanceEvaluator, CityscapesSemSegEvaluator]),
        ("_test_panoptic_only", [COCOPanopticEvaluator]),
        ("GeneralizedRCNN", [CityscapesInstanceEvaluator]),
        ("SemanticSegmentor", [CityscapesSemSegEvaluator]),
    ],
)
def test_cityscapes_panoptic_follows_outputs(dataset, meta_arch, expected):
    names = ["road", "person", "car"]
    dataset(
        evaluator_type="cityscapes_panoptic_seg",
        thing_classes=names,
        stuff_classes=names,
        thing_dataset_id_to_contiguous_id={24: 1, 26: 2},
        stuff_dataset_id_to_contiguous_id={7: 0},
        gt_dir="/nowhere/gtFine/val",
        panoptic_root="/nowhere",
        panoptic_json="/nowhere.json",
    )
    assert _types(build_evaluator(_cfg(meta_arch), NAME)) == expected


def test_cityscapes_instance_and_semantic(dataset):
    dataset(evaluator_type="cityscapes_instance", thing_classes=["person", "car"], gt_dir="/g")
    assert _types(build_evaluator(_cfg("PanopticFPN"), NAME)) == [CityscapesInstanceEvaluator]
    with pytest.raises(ValueError, match="cityscapes_instance"):
        build_evaluator(_cfg("SemanticSegmentor"), NAME)


def test_no_matching_output_names_dataset_type_and_outputs(dataset):
    dataset(evaluator_type="sem_seg", stuff_classes=STUFF, ignore_label=255)
    with pytest.raises(ValueError) as e:
        build_evaluator(_cfg("GeneralizedRCNN"), NAME)
    msg = str(e.value)
    assert NAME in msg and "'sem_seg'" in msg and "['instances']" in msg and "GeneralizedRCNN" in msg


def test_unknown_evaluator_type(dataset):
    dataset(evaluator_type="lvis_someday", thing_classes=THINGS)
    with pytest.raises(ValueError, match=f"{NAME}.*'lvis_someday'.*instances"):
        build_evaluator(_cfg("GeneralizedRCNN"), NAME)


def test_missing_evaluator_type(dataset):
    dataset(thing_classes=THINGS)
    with pytest.raises(ValueError, match="evaluator_type=None"):
        build_evaluator(_cfg("GeneralizedRCNN"), NAME)


def test_unregistered_dataset():
    with pytest.raises(KeyError, match="_test_not_registered"):
        build_evaluator(_cfg("GeneralizedRCNN"), "_test_not_registered")


def test_register_evaluator_type(dataset):
    made = []

    def factory(name, meta, outputs, output_dir):
        made.append((name, sorted(outputs), output_dir))
        return [SemSegEvaluator(name)] if "sem_seg" in outputs else []

    register_evaluator_type("_test_type", factory, "sem_seg (custom)")
    try:
        dataset(evaluator_type="_test_type", stuff_classes=STUFF, ignore_label=255)
        assert _types(build_evaluator(_cfg("SemanticSegmentor"), NAME, "/out")) == [SemSegEvaluator]
        assert made == [(NAME, ["sem_seg"], "/out")]
        with pytest.raises(ValueError, match=r"sem_seg \(custom\)"):
            build_evaluator(_cfg("GeneralizedRCNN"), NAME)
    finally:
        build_module.EVALUATOR_TYPES.remove("_test_type")


def test_semantic_dump_knows_thing_ids_of_panoptic_datasets(dataset):
    # stuff_classes spans things and stuff, but detectron2-style metadata maps
    # only stuff ids: the prediction dump must still name a thing's dataset id.
    dataset(evaluator_type="coco_panoptic_seg", sem_seg_root="/s", **PANOPTIC_META)
    (evaluator,) = build_evaluator(_cfg("SemanticSegmentor"), NAME)._evaluators
    encoded = evaluator.encode_json_sem_seg(np.array([[0, 1], [2, 3]]), "a.png")
    assert sorted(e["category_id"] for e in encoded) == [1, 2, 10, 11]


_CHILD = """
import os
import d2ext  # first: its compatibility shims for this Pillow
from detectron2.data import DatasetCatalog, MetadataCatalog
from d2ext.config import get_cfg
from d2ext.evaluation import build_evaluator

DatasetCatalog.register("no_json", lambda: [{"file_name": "a.png", "image_id": 1, "height": 4, "width": 4, "annotations": []}])
MetadataCatalog.get("no_json").set(evaluator_type="coco", thing_classes=["cat"])
cfg = get_cfg()
cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
build_evaluator(cfg, "no_json")  # no output folder: detectron2 needs one for its json
json_file = MetadataCatalog.get("no_json").json_file
assert os.path.isfile(json_file), json_file
print(json_file)
"""


def test_coco_json_of_a_dataset_without_one_lives_as_long_as_the_process():
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    json_file = done.stdout.strip().splitlines()[-1]
    assert os.path.basename(os.path.dirname(json_file)).startswith("d2ext_coco_eval_")
    assert not os.path.exists(os.path.dirname(json_file))  # removed at exit
