"""tools/export_r2o_backbone.py end to end: export, check configs, exit status and messages."""
import os

import pytest
import torch

import d2ext_projects  # noqa: F401
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone

from d2ext.engine.setup import load_cfg

from .conftest import REPO_ROOT, load_tool

tool = load_tool("export_r2o_backbone")

TOY = os.path.join(REPO_ROOT, "configs", "baselines", "toy")
SEMANTIC_FPN = os.path.join(TOY, "semantic_fpn_R18_toy.yaml")
MASKFORMER = os.path.join(REPO_ROOT, "configs", "maskformer", "toy", "maskformer_R18_toy_semantic.yaml")


def _r2o_checkpoint(path, *opts):
    cfg = load_cfg(os.path.join(TOY, "Base-toy-R18-FPN.yaml"), list(opts))
    state = build_resnet_backbone(cfg, ShapeSpec(channels=3)).state_dict()
    model = {"backbone." + k: v for k, v in state.items()}
    model.update({"target_backbone." + k: v for k, v in state.items()})
    torch.save({"model": model}, str(path))
    return str(path)


def test_export_and_check_two_configs(tmp_path, capsys):
    checkpoint = _r2o_checkpoint(tmp_path / "model_final.pth")
    output = str(tmp_path / "r2o_R18.pkl")
    rc = tool.main(["--checkpoint", checkpoint, "--output", output, "--check-config", SEMANTIC_FPN, MASKFORMER])
    out = capsys.readouterr().out
    assert rc == 0 and os.path.isfile(output)
    assert out.count("| result") == 2 and "FAILED" not in out
    assert "backbone.bottom_up" in out and "| ResNet in the model" in out


def test_mismatching_config_fails_naming_config_and_key(tmp_path, capsys):
    checkpoint = _r2o_checkpoint(tmp_path / "narrow.pth", "MODEL.RESNETS.STEM_OUT_CHANNELS", "32")
    rc = tool.main(["--checkpoint", checkpoint, "--output", str(tmp_path / "n.pkl"), "--check-config", SEMANTIC_FPN])
    captured = capsys.readouterr()
    assert rc == 1
    assert "FAILED" in captured.out
    assert SEMANTIC_FPN in captured.err and "backbone.bottom_up.stem.conv1.weight" in captured.err
    assert "shape mismatch" in captured.err


def test_checkpoint_without_backbone_fails_naming_the_file(tmp_path, capsys):
    path = str(tmp_path / "other.pth")
    torch.save({"model": {"head.weight": torch.zeros(1)}}, path)
    assert tool.main(["--checkpoint", path, "--output", str(tmp_path / "o.pkl")]) == 2
    assert "other.pth: no 'backbone.' keys" in capsys.readouterr().err


def test_output_must_be_a_pkl(tmp_path):
    with pytest.raises(SystemExit):
        tool.main(["--checkpoint", "x.pth", "--output", str(tmp_path / "o.pth")])
