"""tools/eval_panoptic_by_count.py end to end: a tiny random Mask R-CNN (instance-only,
so its panoptic output is combined from its instances) on a tiny toy_rods val split."""
import json

import pytest

from d2ext.data.datasets import toy
from tests.tools.conftest import load_tool


@pytest.fixture
def tiny_rods(monkeypatch, isolated_catalogs, tmp_path):
    monkeypatch.setattr(toy, "TOY_RODS_NUM_TRAIN", 1)
    monkeypatch.setattr(toy, "TOY_RODS_NUM_VAL", 3)
    toy.register_toy_datasets(str(tmp_path / "datasets"))


def _opts(weights):
    # confidence 0: random weights score low, and pasting something exercises the combination
    return ["MODEL.WEIGHTS", weights, "MODEL.ROI_HEADS.NUM_CLASSES", "1",
            "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.0"]


def test_instance_model_on_rods_reports_every_group(tiny_rods, tiny_model_dir, tmp_path):
    config_file, _ = tiny_model_dir["instance"]
    weights = save_random_weights_one_class(config_file, tmp_path)
    out = tmp_path / "by_count.json"
    tool = load_tool("eval_panoptic_by_count")
    results = tool.main(["--config-file", config_file, "--dataset", "toy_rods_panoptic_separated_val",
                         "--bins", "0", "20", "40", "--output", str(out)] + _opts(weights))
    groups = results["panoptic_by_count"]
    assert groups["num_images@0-19"] + groups["num_images@20-39"] == 3
    assert 0.0 <= results["panoptic_seg"]["PQ_th"] <= 100.0
    assert json.loads(out.read_text())["results"]["panoptic_by_count"] == groups


def save_random_weights_one_class(config_file, directory):
    """The tiny instance model with one class (toy_rods has one thing class)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from d2ext.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    DetectionCheckpointer(build_model(cfg), save_dir=str(directory)).save("one_class")
    return str(directory / "one_class.pth")


def test_instance_model_needs_a_single_stuff_class(tiny_toy, tiny_model_dir):
    config_file, weights = tiny_model_dir["instance"]
    tool = load_tool("eval_panoptic_by_count")
    with pytest.raises(SystemExit, match="exactly one stuff class"):
        tool.main(["--config-file", config_file, "--dataset", "toy_panoptic_separated_val",
                   "MODEL.WEIGHTS", weights])


def test_refuses_a_dataset_that_is_not_panoptic(tiny_toy, tiny_model_dir):
    config_file, weights = tiny_model_dir["instance"]
    tool = load_tool("eval_panoptic_by_count")
    with pytest.raises(SystemExit, match="not a COCO panoptic dataset"):
        tool.main(["--config-file", config_file, "--dataset", "toy_instances_val", "MODEL.WEIGHTS", weights])
