"""Bad input files fail with a DatasetError naming them: label values outside the
classes and the ignore label (training mapper and semantic evaluator), and image
or label files that cannot be decoded.

Each test copies one file of the tiny toy dataset into tmp_path and breaks the
copy; the session's toy files stay intact.
"""
import copy
import os
import re

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from d2ext.config import get_cfg
from d2ext.data.datasets import DatasetError
from d2ext.data.mapper import CommonDatasetMapper
from d2ext.evaluation import CheckedSemSegEvaluator, build_evaluator


def _sem_dict(split="train"):
    return copy.deepcopy(DatasetCatalog.get(f"toy_sem_seg_{split}")[0])


def _mapper(is_train=True, **kw):
    kw.setdefault("num_classes", 5)
    return CommonDatasetMapper(
        is_train, augmentations=[], image_format="RGB", targets=["sem_seg"] if is_train else (), **kw
    )


def _write_labels(path, labels, mode=None):
    Image.fromarray(labels, mode=mode).save(path)
    return str(path)


def _with_value(src: str, value: int, dst) -> str:
    labels = np.array(Image.open(src)).astype(np.uint8 if value <= 255 else np.uint16)
    labels[:3, :4] = value
    return _write_labels(dst, labels)


def _truncated_copy(src: str, dst) -> str:
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[: len(data) // 2])
    return str(dst)


# ------------------------------------------------------------- label values


def test_training_label_value_outside_classes_names_file_image_values_range_and_ignore(tiny_toy, tmp_path):
    d = _sem_dict()
    d["sem_seg_file_name"] = _with_value(d["sem_seg_file_name"], 7, tmp_path / "bad.png")
    with pytest.raises(DatasetError) as info:
        _mapper()(d)
    msg = str(info.value)
    assert d["sem_seg_file_name"] in msg and d["file_name"] in msg
    assert "label values [7]" in msg and "[0, 5)" in msg and "ignore label 255" in msg


def test_training_label_values_ignore_and_every_class_pass(tiny_toy, tmp_path):
    d = _sem_dict()
    labels = np.array(Image.open(d["sem_seg_file_name"]))
    labels[0, :6] = [0, 1, 2, 3, 4, 255]
    d["sem_seg_file_name"] = _write_labels(tmp_path / "ok.png", labels)
    out = _mapper()(d)
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 3, 4, 255}


def test_value_above_255_in_a_16_bit_png_is_found_before_narrowing(tiny_toy, tmp_path):
    d = _sem_dict()
    d["sem_seg_file_name"] = _with_value(d["sem_seg_file_name"], 300, tmp_path / "wide.png")
    with pytest.raises(DatasetError, match=r"label values \[300\]"):
        _mapper()(d)


def test_mapper_from_config_takes_the_class_count_from_the_training_metadata(tiny_toy):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("toy_sem_seg_train",)
    assert CommonDatasetMapper(cfg, is_train=True).num_classes == 5
    cfg.DATASETS.TRAIN = ("toy_panoptic_separated_train",)  # stuff PNGs: 0 = things, 1..2 stuff
    assert CommonDatasetMapper(cfg, is_train=True).num_classes == 3
    cfg.DATASETS.TRAIN = ("toy_instances_train",)  # no semantic classes: nothing to check
    assert CommonDatasetMapper(cfg, is_train=True).num_classes is None


def test_semantic_labels_derived_from_panoptic_check_the_segment_classes(tiny_toy):
    d = copy.deepcopy(DatasetCatalog.get("toy_panoptic_train")[0])
    d.pop("sem_seg_file_name", None)  # derive the semantic map from the panoptic PNG
    d["segments_info"][0]["category_id"] = 7
    with pytest.raises(DatasetError) as info:
        _mapper()(d)
    msg = str(info.value)
    assert d["pan_seg_file_name"] in msg and d["file_name"] in msg
    assert "category ids [7]" in msg and "[0, 5)" in msg


# ------------------------------------------------------------ evaluation


@pytest.fixture
def bad_gt_dataset(tiny_toy, tmp_path):
    """toy_sem_seg_val's first image whose ground truth holds the value 7, as a dataset."""
    d = _sem_dict("val")
    d["sem_seg_file_name"] = _with_value(d["sem_seg_file_name"], 7, tmp_path / "bad_gt.png")
    DatasetCatalog.register("bad_gt_sem_seg", lambda: [d])
    meta = MetadataCatalog.get("toy_sem_seg_val").as_dict()
    meta.pop("name")
    MetadataCatalog.get("bad_gt_sem_seg").set(**meta)
    return d  # removed by isolated_catalogs (through tiny_toy)


def _evaluate_once(evaluator, d):
    evaluator.reset()
    scores = torch.zeros(5, d["height"], d["width"])
    evaluator.process([{"file_name": d["file_name"]}], [{"sem_seg": scores}])


def test_evaluation_ground_truth_value_outside_classes_is_named(bad_gt_dataset):
    d = bad_gt_dataset
    evaluator = CheckedSemSegEvaluator("bad_gt_sem_seg", distributed=False)
    with pytest.raises(DatasetError) as info:
        _evaluate_once(evaluator, d)
    msg = str(info.value)
    assert d["sem_seg_file_name"] in msg and d["file_name"] in msg and "'bad_gt_sem_seg'" in msg
    assert "label values [7]" in msg and "[0, 5)" in msg and "ignore label 255" in msg


def test_build_evaluator_uses_the_checked_semantic_evaluator(bad_gt_dataset):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    evaluators = build_evaluator(cfg, "bad_gt_sem_seg")
    with pytest.raises(DatasetError, match=re.escape(bad_gt_dataset["sem_seg_file_name"])):
        _evaluate_once(evaluators, bad_gt_dataset)


def test_evaluation_of_valid_ground_truth_is_unchanged(tiny_toy):
    d = _sem_dict("val")
    evaluator = CheckedSemSegEvaluator("toy_sem_seg_val", distributed=False)
    _evaluate_once(evaluator, d)  # all "disc" predicted
    assert 0.0 <= evaluator.evaluate()["sem_seg"]["mIoU"] <= 100.0


# ------------------------------------------------------- unreadable files


@pytest.mark.parametrize("is_train", [True, False])
def test_truncated_image_is_named_with_the_decoder_error_as_cause(tiny_toy, tmp_path, is_train):
    d = _sem_dict()
    d["file_name"] = _truncated_copy(d["file_name"], tmp_path / "truncated.png")
    with pytest.raises(DatasetError) as info:
        _mapper(is_train)(d)
    assert d["file_name"] in str(info.value) and "cannot read this image" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_truncated_label_png_is_named_with_its_image(tiny_toy, tmp_path):
    d = _sem_dict()
    d["sem_seg_file_name"] = _truncated_copy(d["sem_seg_file_name"], tmp_path / "truncated_label.png")
    with pytest.raises(DatasetError) as info:
        _mapper()(d)
    msg = str(info.value)
    assert d["sem_seg_file_name"] in msg and d["file_name"] in msg and "semantic label map" in msg
    assert isinstance(info.value.__cause__, OSError)


def test_missing_image_file_is_named(tiny_toy, tmp_path):
    d = _sem_dict()
    d["file_name"] = str(tmp_path / "absent.png")
    with pytest.raises(DatasetError, match=re.escape(d["file_name"])):
        _mapper()(d)


def test_evaluation_truncated_ground_truth_is_named(bad_gt_dataset):
    d = bad_gt_dataset
    _truncated_copy(_sem_dict("val")["sem_seg_file_name"], d["sem_seg_file_name"])
    evaluator = CheckedSemSegEvaluator("bad_gt_sem_seg", distributed=False)
    with pytest.raises(DatasetError) as info:
        _evaluate_once(evaluator, d)
    assert d["sem_seg_file_name"] in str(info.value) and "ground-truth" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


def test_truncated_panoptic_png_is_named_with_its_image(tiny_toy, tmp_path):
    d = copy.deepcopy(DatasetCatalog.get("toy_panoptic_train")[0])
    d.pop("sem_seg_file_name", None)
    d["pan_seg_file_name"] = _truncated_copy(d["pan_seg_file_name"], tmp_path / "truncated_pan.png")
    with pytest.raises(DatasetError) as info:
        _mapper()(d)
    msg = str(info.value)
    assert d["pan_seg_file_name"] in msg and d["file_name"] in msg and "panoptic PNG" in msg
