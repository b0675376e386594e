"""Cityscapes evaluators on a tiny Cityscapes-layout fixture, through build_evaluator:
ground truth as prediction scores 100, perturbed predictions score less."""
import copy
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOPanopticEvaluator

import d2ext  # noqa: F401
from d2ext.config import get_cfg
from d2ext.data.datasets.catalog import unregister_dataset
from d2ext.data.datasets.cityscapes import (
    register_cityscapes_instances,
    register_cityscapes_panoptic,
    register_cityscapes_semantic,
)
from d2ext.evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator, build_evaluator
from d2ext.evaluation import cityscapes_common
from d2ext.evaluation.cityscapes_common import run_cityscapes
from tests.d2ext.evaluation import oracle
from tests.fixtures.cityscapes_fixture import make_cityscapes

INSTANCE, SEMANTIC, PANOPTIC = (
    "_test_cityscapes_instance_val",
    "_test_cityscapes_sem_seg_val",
    "_test_cityscapes_panoptic_val",
)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cs"))
    make_cityscapes(root)
    base = os.path.join(root, "cityscapes")
    image_dir = os.path.join(base, "leftImg8bit", "val")
    gt_dir = os.path.join(base, "gtFine", "val")
    register_cityscapes_instances(INSTANCE, image_dir, gt_dir)
    register_cityscapes_semantic(SEMANTIC, image_dir, gt_dir)
    register_cityscapes_panoptic(
        PANOPTIC,
        image_dir,
        gt_dir,
        os.path.join(base, "gtFine", "cityscapes_panoptic_val"),
        os.path.join(base, "gtFine", "cityscapes_panoptic_val.json"),
    )
    yield {name: DatasetCatalog.get(name) for name in (INSTANCE, SEMANTIC, PANOPTIC)}
    for name in (INSTANCE, SEMANTIC, PANOPTIC):
        unregister_dataset(name)


def _cfg(meta_arch="PanopticFPN"):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = meta_arch
    return cfg


def _types(evaluators):
    return [type(e) for e in evaluators._evaluators]


def _instance_outputs(dicts):
    return {d["file_name"]: {"instances": oracle.instances_from_annotations(d)} for d in dicts}


def _semantic_outputs(dicts, num_classes=19):
    return {
        d["file_name"]: {"sem_seg": oracle.sem_seg_from_file(d["sem_seg_file_name"], num_classes)}
        for d in dicts
    }


# ------------------------------------------------------------------ instance


def test_instance_ground_truth_scores_100(datasets):
    evaluator = build_evaluator(_cfg(), INSTANCE)
    assert _types(evaluator) == [CityscapesInstanceEvaluator]
    res = oracle.run(evaluator, datasets[INSTANCE], _instance_outputs(datasets[INSTANCE]))["segm"]
    assert res["AP"] == pytest.approx(100.0, abs=1e-6)
    assert res["AP50"] == pytest.approx(100.0, abs=1e-6)
    assert res["AP-car"] == pytest.approx(100.0, abs=1e-6)
    assert np.isnan(res["AP-truck"])  # no truck anywhere: not averaged


def test_instance_perturbed_scores_less(datasets):
    outputs = _instance_outputs(datasets[INSTANCE])
    first = datasets[INSTANCE][0]["file_name"]
    inst = outputs[first]["instances"]
    keep = torch.ones(len(inst), dtype=torch.bool)
    keep[0] = False  # miss one object
    inst = inst[keep]
    inst.pred_masks[0] = torch.roll(inst.pred_masks[0], shifts=6, dims=1)  # misplace another
    outputs[first] = {"instances": inst}
    res = oracle.run(build_evaluator(_cfg(), INSTANCE), datasets[INSTANCE], outputs)["segm"]
    assert res["AP"] < 99.0
    assert res["AP50"] < 100.0


def test_instance_no_predictions_scores_0(datasets):
    outputs = {
        d["file_name"]: {"instances": oracle.instances_from_annotations({**d, "annotations": []})}
        for d in datasets[INSTANCE]
    }
    res = oracle.run(build_evaluator(_cfg(), INSTANCE), datasets[INSTANCE], outputs)["segm"]
    assert res["AP"] == 0.0


def test_instance_output_dir_keeps_cityscapes_files(datasets, tmp_path):
    evaluator = CityscapesInstanceEvaluator(INSTANCE, output_dir=str(tmp_path))
    outputs = _instance_outputs(datasets[INSTANCE])
    for _ in range(2):  # a second run replaces the first one's files
        res = oracle.run(evaluator, datasets[INSTANCE], outputs)["segm"]
        assert res["AP"] == pytest.approx(100.0, abs=1e-6)
    work = tmp_path / "cityscapes_instance"
    txt = sorted(p.name for p in work.glob("*_pred.txt"))
    assert txt == [f"{d['image_id']}_pred.txt" for d in datasets[INSTANCE]]
    line = (work / txt[0]).read_text().splitlines()[0].split(" ")
    assert line[0].startswith("masks/") and line[1] == "24"  # label id of "person"
    assert (work / "resultInstanceLevelSemanticLabeling.json").is_file()


def test_cityscapesscripts_settings_are_not_changed(datasets):
    import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as inst_eval
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as pix_eval

    oracle.run(build_evaluator(_cfg(), INSTANCE), datasets[INSTANCE], _instance_outputs(datasets[INSTANCE]))
    oracle.run(build_evaluator(_cfg(), SEMANTIC), datasets[SEMANTIC], _semantic_outputs(datasets[SEMANTIC]))
    assert inst_eval.args.predictionPath is None and inst_eval.args.quiet is False
    assert pix_eval.args.predictionPath is None and pix_eval.args.quiet is False
    assert not os.path.exists("matches.json")


# ------------------------------------------------------------------ semantic


def test_semantic_ground_truth_scores_100(datasets):
    evaluator = build_evaluator(_cfg(), SEMANTIC)
    assert _types(evaluator) == [CityscapesSemSegEvaluator]
    res = oracle.run(evaluator, datasets[SEMANTIC], _semantic_outputs(datasets[SEMANTIC]))["sem_seg"]
    for key in ("IoU", "iIoU", "IoU_sup", "iIoU_sup", "IoU-road", "IoU-car"):
        assert res[key] == pytest.approx(100.0, abs=1e-6), key


def test_semantic_perturbed_scores_less(datasets):
    outputs = _semantic_outputs(datasets[SEMANTIC])
    first = datasets[SEMANTIC][0]["file_name"]
    scores = outputs[first]["sem_seg"]
    scores[:, 40:56, 10:30] = oracle.one_hot(np.zeros((16, 20), np.uint8), 19)  # a car as road
    res = oracle.run(build_evaluator(_cfg(), SEMANTIC), datasets[SEMANTIC], outputs)["sem_seg"]
    assert res["IoU"] < 100.0 and res["IoU-car"] < 100.0 and res["iIoU"] < 100.0
    assert res["IoU-sky"] == pytest.approx(100.0, abs=1e-6)


def test_semantic_wrong_channel_count_is_an_error(datasets):
    evaluator = build_evaluator(_cfg(), SEMANTIC)
    with pytest.raises(ValueError, match="19 stuff_classes"):
        oracle.run(evaluator, datasets[SEMANTIC], _semantic_outputs(datasets[SEMANTIC], num_classes=8))


# ------------------------------------------------------------------ panoptic


def _panoptic_outputs(dicts):
    return {
        d["file_name"]: {
            "panoptic_seg": oracle.panoptic_from_dict(d),
            "instances": oracle.instances_from_panoptic(d),
            "sem_seg": oracle.sem_seg_from_file(d["sem_seg_file_name"], 19),
        }
        for d in dicts
    }


def test_panoptic_ground_truth_scores_100(datasets):
    evaluator = build_evaluator(_cfg(), PANOPTIC)
    assert _types(evaluator) == [
        COCOPanopticEvaluator,
        CityscapesInstanceEvaluator,
        CityscapesSemSegEvaluator,
    ]
    res = oracle.run(evaluator, datasets[PANOPTIC], _panoptic_outputs(datasets[PANOPTIC]))
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0, abs=1e-6)
    assert res["segm"]["AP"] == pytest.approx(100.0, abs=1e-6)
    assert res["sem_seg"]["IoU"] == pytest.approx(100.0, abs=1e-6)


def test_panoptic_perturbed_scores_less(datasets):
    outputs = _panoptic_outputs(datasets[PANOPTIC])
    last = datasets[PANOPTIC][-1]  # two persons side by side
    ids, segments = outputs[last["file_name"]]["panoptic_seg"]
    persons = [s["id"] for s in segments if s["isthing"] and s["category_id"] == 11]
    assert len(persons) == 2
    ids = ids.clone()
    ids[ids == persons[1]] = persons[0]  # merged into one segment
    segments = [s for s in segments if s["id"] != persons[1]]
    outputs[last["file_name"]]["panoptic_seg"] = (ids, segments)
    evaluator = build_evaluator(_cfg("_test_panoptic_only"), PANOPTIC)
    assert _types(evaluator) == [COCOPanopticEvaluator]
    res = oracle.run(evaluator, datasets[PANOPTIC], outputs)["panoptic_seg"]
    assert res["PQ"] < 100.0 and res["PQ_st"] == pytest.approx(100.0, abs=1e-6)


def test_panoptic_instances_with_stuff_classes_are_dropped(datasets):
    # On the panoptic dataset pred_classes index all 19 classes; a "road"
    # instance is not a Cityscapes instance class and must not count.
    outputs = _panoptic_outputs(datasets[PANOPTIC])
    for out in outputs.values():
        inst = out["instances"]
        extra = copy.deepcopy(inst[:1])
        extra.pred_classes[:] = 0  # road
        out["instances"] = type(inst).cat([inst, extra])
    evaluator = CityscapesInstanceEvaluator(PANOPTIC)
    res = oracle.run(evaluator, datasets[PANOPTIC], outputs)["segm"]
    assert res["AP"] == pytest.approx(100.0, abs=1e-6)


# ------------------------------------------------------------------ errors


def test_cityscapesscripts_exit_becomes_runtime_error():
    from cityscapesscripts.helpers.csHelpers import printError

    with pytest.raises(RuntimeError, match="ERROR: broken"):
        run_cityscapes(printError, "broken")


def test_prediction_without_ground_truth_is_an_error(datasets):
    evaluator = CityscapesSemSegEvaluator(SEMANTIC)
    evaluator.reset()
    d = dict(datasets[SEMANTIC][0], file_name="/x/nowhere/zeta_000000_000001_leftImg8bit.png")
    evaluator.process([d], [_semantic_outputs(datasets[SEMANTIC][:1])[datasets[SEMANTIC][0]["file_name"]]])
    with pytest.raises(FileNotFoundError, match="zeta_000000_000001"):
        evaluator.evaluate()


@pytest.fixture(scope="module", autouse=True)
def _panoptic_only_model():
    from d2ext.model_io import MODEL_IO, register_model_io

    register_model_io("_test_panoptic_only", lambda cfg: frozenset(), lambda cfg: frozenset({"panoptic_seg"}))
    yield
    MODEL_IO.remove("_test_panoptic_only")
