"""Toy datasets through build_evaluator: ground truth fed as model outputs scores
PQ = AP = mIoU = 100 with every evaluator a PanopticFPN run gets."""
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog

import d2ext  # noqa: F401
from d2ext.config import get_cfg
from d2ext.data.datasets import toy
from d2ext.evaluation import build_evaluator
from tests.d2ext.evaluation import oracle

TOY_VAL = ["toy_instances_val", "toy_panoptic_val", "toy_panoptic_separated_val", "toy_sem_seg_val"]

# what each dataset must report, given a model with all three outputs
EXPECTED_TASKS = {
    "toy_instances_val": {"bbox", "segm"},
    "toy_panoptic_val": {"panoptic_seg", "bbox", "segm", "sem_seg"},
    "toy_panoptic_separated_val": {"panoptic_seg", "bbox", "segm", "sem_seg"},
    "toy_sem_seg_val": {"sem_seg"},
}
HEADLINE = {"panoptic_seg": "PQ", "bbox": "AP", "segm": "AP", "sem_seg": "mIoU"}


@pytest.fixture(scope="module")
def toy_datasets(tmp_path_factory):
    """The toy names registered for a fresh datasets root, with a small val split
    (13 images: index 12 has no things); back to the session's root afterwards."""
    patch = pytest.MonkeyPatch()
    root = str(tmp_path_factory.mktemp("datasets"))
    patch.setenv("DETECTRON2_DATASETS", root)  # toy.py reads the root when registering
    patch.setattr(toy, "TOY_NUM_TRAIN", 1)
    patch.setattr(toy, "TOY_NUM_VAL", 13)
    toy.register_toy_datasets()
    try:
        yield {name: DatasetCatalog.get(name) for name in TOY_VAL}
    finally:
        patch.undo()
        toy.register_toy_datasets()


def _cfg():
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "PanopticFPN"  # instances + sem_seg + panoptic_seg
    return cfg


def ground_truth_outputs(name, dicts):
    meta = MetadataCatalog.get(name)
    panoptic = oracle.panoptic_from_json(meta) if hasattr(meta, "panoptic_json") else {}
    outputs = {}
    for d in dicts:
        out = {}
        if "annotations" in d:
            out["instances"] = oracle.instances_from_annotations(d)
        if "sem_seg_file_name" in d:
            out["sem_seg"] = oracle.sem_seg_from_file(d["sem_seg_file_name"], len(meta.stuff_classes))
        if d["image_id"] in panoptic:
            out["panoptic_seg"] = panoptic[d["image_id"]]
        outputs[d["file_name"]] = out
    return outputs


@pytest.mark.parametrize("name", TOY_VAL)
def test_ground_truth_scores_100(toy_datasets, name):
    dicts = toy_datasets[name]
    if "annotations" in dicts[0]:
        assert any(not d["annotations"] for d in dicts)  # an image without things is included
    results = oracle.run(build_evaluator(_cfg(), name), dicts, ground_truth_outputs(name, dicts))
    assert set(results) == EXPECTED_TASKS[name]
    for task, metrics in results.items():
        key = HEADLINE[task]
        assert metrics[key] == pytest.approx(100.0, abs=1e-6), (task, key, metrics[key])


def test_perturbed_outputs_score_less(toy_datasets):
    name = "toy_panoptic_val"
    dicts = toy_datasets[name]
    outputs = ground_truth_outputs(name, dicts)
    out = outputs[dicts[0]["file_name"]]
    ids, segments = out["panoptic_seg"]
    victim = next(s for s in segments if s["isthing"])
    mask = ids == victim["id"]
    out["panoptic_seg"] = (torch.where(mask, 0, ids), [s for s in segments if s is not victim])
    out["instances"] = out["instances"][1:]
    sem_seg = out["sem_seg"].clone()
    sem_seg[:, mask] = 0
    sem_seg[(victim["category_id"] + 1) % sem_seg.shape[0], mask] = 1.0  # another class
    out["sem_seg"] = sem_seg
    results = oracle.run(build_evaluator(_cfg(), name), dicts, outputs)
    for task in ("panoptic_seg", "segm", "bbox", "sem_seg"):
        assert results[task][HEADLINE[task]] < 100.0, task
