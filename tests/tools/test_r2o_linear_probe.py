"""tools/r2o_linear_probe.py on the tiny toy set: real features, SemSegEvaluator scores."""
import json
import os

import pytest
import torch

from .conftest import REPO_ROOT, load_tool

tool = load_tool("r2o_linear_probe")
SEMANTIC_TOY = os.path.join(REPO_ROOT, "configs", "baselines", "toy", "semantic_fpn_R18_toy.yaml")


def test_random_init_and_an_export_are_probed_and_scored(tiny_toy, tmp_path, capsys):
    """A backbone export (here: a random-init backbone saved under other weights) and
    random init: two results with the evaluator's mIoU; they differ, so the weights arrived."""
    from detectron2.modeling import build_model

    from d2ext.engine.setup import load_cfg

    cfg = load_cfg(SEMANTIC_TOY, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(123)
    other = build_model(cfg)
    weights = tmp_path / "other.pth"
    torch.save({"model": other.state_dict()}, weights)
    out = tmp_path / "probe.json"
    argv = ["--config-file", SEMANTIC_TOY, "--weights", "", str(weights), "--iters", "3", "--batch-size", "2",
            "--output", str(out)]
    assert tool.main(argv) == 0
    record = json.loads(out.read_text())
    assert [r["weights"] for r in record["results"]] == ["", str(weights)]
    scores = [r["results"]["sem_seg"]["mIoU"] for r in record["results"]]
    assert all(0.0 <= s <= 100.0 for s in scores)
    assert record["results"][0]["results"] != record["results"][1]["results"]
    printed = capsys.readouterr().out
    assert "random init: linear probe on res4+res5, toy_sem_seg_val: mIoU" in printed


def test_a_missing_weights_file_is_named(tiny_toy, tmp_path):
    with pytest.raises(SystemExit, match="nope.pkl: no such file"):
        tool.main(["--config-file", SEMANTIC_TOY, "--weights", str(tmp_path / "nope.pkl"), "--iters", "1"])
