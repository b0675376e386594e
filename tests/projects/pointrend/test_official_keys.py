"""detectron2's own PointRend checkpoints load into d2ext's PointRend as they are.

tests/fixtures/pointrend_official_keys.json holds the state-dict keys and shapes of
detectron2's PointRend models (its projects/PointRend at v0.6, built from its published
configs with small overrides), written by tests/fixtures/make_pointrend_official_keys.py
from detectron2's source. d2ext's models, built from d2ext's copies of those configs
with the same overrides, must have exactly those keys and shapes. Also: state dicts
with d2ext's earlier parameter names still load (renamed on load), with equal tensors.
"""
import json
import os
import re

import d2ext  # noqa: F401  (compat before detectron2)

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

import d2ext_projects.pointrend  # noqa: F401  (registers the heads)
from d2ext.engine import Trainer, load_cfg
from tests.conftest import REPO_ROOT

with open(os.path.join(REPO_ROOT, "tests", "fixtures", "pointrend_official_keys.json")) as f:
    OFFICIAL = json.load(f)

MODELS = ["pointrend_rcnn", "implicit_pointrend", "pointrend_semantic"]

# The new (detectron2) key fragments -> d2ext's earlier ones, to write old checkpoints.
OLD_NAMES = [
    (r"\.coarse_head\.reduce_spatial_dim_conv\.", ".coarse_head.net.reduce."),
    (r"\.coarse_head\.fc(\d+)\.", lambda m: f".coarse_head.net.fcs.{int(m[1]) - 1}."),
    (r"\.coarse_head\.prediction\.", ".coarse_head.net.predictor."),
    (r"\.parameter_head\.reduce_spatial_dim_conv\.", ".parameter_head.reduce."),
    (r"\.parameter_head\.fc(\d+)\.", lambda m: f".parameter_head.fcs.{int(m[1]) - 1}."),
    (r"\.parameter_head\.prediction\.", ".parameter_head.predictor."),
    (r"\.point_head\.fc(\d+)\.", lambda m: f".point_head.fcs.{int(m[1]) - 1}."),
    (r"\.point_head\.positional_encoding_gaussian_matrix$", ".point_head.pos_enc_freqs"),
    (r"^sem_seg_head\.coarse_sem_seg_head\.", "sem_seg_head.coarse_head."),
]


def old_name(key: str) -> str:
    for pattern, repl in OLD_NAMES:
        key = re.sub(pattern, repl, key)
    return key


def build(name: str, seed: int = 0):
    entry = OFFICIAL[name]
    cfg = load_cfg(os.path.join(REPO_ROOT, entry["d2ext_config"]), entry["opts"])
    torch.manual_seed(seed)
    return Trainer.build_model(cfg)


@pytest.mark.parametrize("name", MODELS)
def test_keys_and_shapes_are_detectron2s(name):
    official = {k: tuple(v) for k, v in OFFICIAL[name]["keys"].items()}
    ours = {k: tuple(v.shape) for k, v in build(name).state_dict().items()}
    assert sorted(set(official) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(official)) == []  # unexpected
    assert {k for k in ours if ours[k] != official[k]} == set()  # shapes


@pytest.mark.parametrize("name", MODELS)
def test_detectron2_checkpoint_loads_through_checkpointer(name, tmp_path):
    """A checkpoint with detectron2's keys (random tensors of its shapes) loads with
    DetectionCheckpointer, as MODEL.WEIGHTS does: no missing or unexpected keys."""
    gen = torch.Generator().manual_seed(1)
    weights = {k: torch.randn(v, generator=gen) for k, v in OFFICIAL[name]["keys"].items()}
    torch.save({"model": weights}, tmp_path / "official.pth")
    model = build(name)
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(tmp_path / "official.pth")))
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys == []
    state = model.state_dict()
    for key, value in weights.items():
        if value.dtype.is_floating_point:
            assert torch.equal(state[key], value), key


def test_detectron2_pre_v03_coarse_head_names_load():
    """detectron2's older ``coarse_mask_fc{i}`` (which its own ConvFCHead renames) load too."""
    model = build("pointrend_rcnn")
    state = model.state_dict()
    old = {re.sub(r"\.coarse_head\.fc(\d)\.", r".coarse_head.coarse_mask_fc\1.", k): v for k, v in state.items()}
    assert any(".coarse_mask_fc1." in k for k in old)
    build("pointrend_rcnn", seed=1).load_state_dict(old, strict=True)


@pytest.mark.parametrize("name", MODELS)
def test_earlier_d2ext_names_load_with_equal_tensors(name):
    source = build(name, seed=0)
    state = source.state_dict()
    old = {old_name(k): v for k, v in state.items()}
    renamed = {k for k in state if old_name(k) != k}
    assert renamed, "the old-name table no longer matches anything"
    target = build(name, seed=1)
    target.load_state_dict(old, strict=True)  # raises on missing / unexpected keys
    loaded = target.state_dict()
    for key in renamed:
        assert torch.equal(loaded[key], state[key]), key
