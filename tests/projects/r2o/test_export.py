"""R2O backbone export: names, values, and loading into every toy config of the repository.

The R2O-like checkpoint is made here from a plain detectron2 ResNet-18 (the toy
configs' backbone) under the R2O model's attribute names, with every float
tensor random (batch-norm statistics included, so that "equal after loading"
cannot hold by the default initialisation), independent of the R2O model code.
"""
import glob
import os
import pickle

import pytest
import torch

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration)
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone import build_resnet_backbone

from d2ext.engine.setup import load_cfg
from d2ext_projects.r2o.export import (
    EXPORT_AUTHOR,
    ExportError,
    check_export,
    encoder_arrays,
    export_backbone,
    find_resnet,
)
from tests.conftest import REPO_ROOT

TOY_BASE = os.path.join(REPO_ROOT, "configs", "baselines", "toy", "Base-toy-R18-FPN.yaml")
SEMANTIC_FPN = os.path.join(REPO_ROOT, "configs", "baselines", "toy", "semantic_fpn_R18_toy.yaml")
# Every runnable toy config (Base-* files are only inherited; their children are here).
TOY_CONFIGS = sorted(
    p
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "toy*", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)
# Where the ResNet sits in each family's model: FPN (bottom_up), plain ResNet
# backbone (MaskFormer), ICNet's wrapper.
KNOWN_PREFIXES = {"backbone.bottom_up.", "backbone.", "backbone.resnet."}


def _random_resnet_state(seed: int, *opts):
    cfg = load_cfg(TOY_BASE, ["MODEL.RESNETS.OUT_FEATURES", "['res4', 'res5']", *opts])
    resnet = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    g = torch.Generator().manual_seed(seed)
    # rand in [0.5, 1.5): positive, so also a valid running_var
    return {
        k: (torch.rand(v.shape, generator=g) + 0.5 if v.is_floating_point() else v + 7)
        for k, v in resnet.state_dict().items()
    }


def _save_r2o_like(path, online, target=None):
    model = {"backbone." + k: v for k, v in online.items()}
    model.update({"target_backbone." + k: v for k, v in (target or online).items()})
    model["projector.0.weight"] = torch.ones(8, 4)  # other R2O parts: never exported
    model["predictor.0.weight"] = torch.ones(8, 4)
    torch.save({"model": model, "iteration": 3}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def r2o_export(tmp_path_factory):
    """(online state, target state, checkpoint path, export path of the online encoder)."""
    root = tmp_path_factory.mktemp("r2o_export")
    online, target = _random_resnet_state(0), _random_resnet_state(1)
    checkpoint = _save_r2o_like(root / "model_final.pth", online, target)
    output = str(root / "r2o_R18.pkl")
    export_backbone(checkpoint, output, "online")
    return online, target, checkpoint, output


def test_export_file_is_a_model_zoo_pickle_of_the_online_resnet(r2o_export):
    online, _, _, output = r2o_export
    with open(output, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == EXPORT_AUTHOR and data["matching_heuristics"] is True
    arrays = data["model"]
    assert set(arrays) == set(online)  # plain ResNet names; projector/predictor/target left out
    assert "stem.conv1.weight" in arrays and "res2.0.conv1.norm.running_mean" in arrays
    for k, v in online.items():
        assert torch.equal(torch.as_tensor(arrays[k]), v), k


def test_target_encoder_exports_the_momentum_copy(r2o_export, tmp_path):
    _, target, checkpoint, _ = r2o_export
    arrays = export_backbone(checkpoint, str(tmp_path / "target.pkl"), "target")
    assert set(arrays) == set(target)
    for k, v in target.items():
        assert torch.equal(torch.as_tensor(arrays[k]), v), k


@pytest.mark.parametrize("config_file", TOY_CONFIGS, ids=lambda p: os.path.relpath(p, REPO_ROOT))
def test_export_loads_into_every_toy_config(r2o_export, config_file):
    online, _, _, output = r2o_export
    cfg = load_cfg(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    if cfg.MODEL.META_ARCHITECTURE == "R2O":
        pytest.skip("the R2O pretraining model itself: two ResNets (online + target); it resumes from .pth")
    if cfg.MODEL.RESNETS.DEPTH != 18:
        pytest.skip(f"backbone is ResNet-{cfg.MODEL.RESNETS.DEPTH}, the export is a ResNet-18")
    model = build_model(cfg)
    check = check_export(model, output, config=config_file)
    assert check.ok, check.problems()
    assert check.num_backbone_keys == len(online) == check.num_loaded
    assert check.prefix in KNOWN_PREFIXES
    assert not check.counters_skipped  # toy configs train BN from scratch: counters load too

    # Independently of check_export: each exported name is the dotted suffix of
    # exactly one model key, and that key now holds the exported value.
    state = model.state_dict()
    for k, v in online.items():
        hits = [m for m in state if m == k or m.endswith("." + k)]
        assert len(hits) == 1, (k, hits)
        assert hits[0] == check.prefix + k
        assert torch.equal(state[hits[0]], v), hits[0]


def test_missing_backbone_keys_is_a_named_error(tmp_path):
    path = str(tmp_path / "not_r2o.pth")
    torch.save({"model": {"sem_seg_head.predictor.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ExportError, match=r"not_r2o\.pth: no 'backbone\.' keys"):
        export_backbone(path, str(tmp_path / "out.pkl"))
    assert not os.path.exists(tmp_path / "out.pkl")


def test_backbone_that_is_not_a_resnet_is_a_named_error():
    with pytest.raises(ExportError, match=r"x\.pth: the 'backbone\.' keys are not a detectron2 ResNet"):
        encoder_arrays({"backbone.fpn_lateral2.weight": torch.zeros(1)}, source="x.pth")


def test_unknown_encoder_and_missing_file_are_named_errors(tmp_path):
    with pytest.raises(ExportError, match="encoder must be one of"):
        encoder_arrays({"backbone.stem.conv1.weight": torch.zeros(1)}, encoder="momentum")
    with pytest.raises(ExportError, match="nope.pth: no such checkpoint file"):
        export_backbone(str(tmp_path / "nope.pth"), str(tmp_path / "out.pkl"))


def test_shape_mismatch_is_caught_and_named(tmp_path):
    # A stem of 32 channels: stem.conv1 and res2.0.conv1 differ in shape, and
    # res2.0 gains a shortcut (32 -> 64) that the toy model does not have.
    narrow = _random_resnet_state(2, "MODEL.RESNETS.STEM_OUT_CHANNELS", "32")
    checkpoint = _save_r2o_like(tmp_path / "narrow.pth", narrow)
    output = str(tmp_path / "narrow.pkl")
    export_backbone(checkpoint, output)
    model = build_model(load_cfg(SEMANTIC_FPN, ["MODEL.DEVICE", "cpu"]))
    check = check_export(model, output, config="semantic_fpn")
    assert not check.ok
    bad = " ".join(check.shape_mismatch)
    assert "backbone.bottom_up.stem.conv1.weight: export (32, 3, 7, 7) vs model (64, 3, 7, 7)" in bad
    assert "backbone.bottom_up.res2.0.conv1.weight" in bad
    assert "res2.0.shortcut.weight" in check.unused
    assert not check.value_mismatch  # mismatched keys are reported once, as shapes


def test_deeper_model_reports_missing_blocks(r2o_export):
    _, _, _, output = r2o_export
    model = build_model(load_cfg(SEMANTIC_FPN, ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "34"]))
    check = check_export(model, output, config="R34")
    assert not check.ok
    assert "res2.2.conv1.weight" in check.missing and "res4.5.conv2.norm.weight" in check.missing
    assert not check.unused and not check.shape_mismatch


def test_frozen_stages_skip_counters_only(r2o_export):
    # detectron2's default FREEZE_AT 2 turns stem + res2 into FrozenBatchNorm2d,
    # which has no num_batches_tracked: those counters are the only keys left over.
    _, _, _, output = r2o_export
    model = build_model(load_cfg(SEMANTIC_FPN, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.FREEZE_AT", "2"]))
    check = check_export(model, output, config="frozen")
    assert check.ok, check.problems()
    assert check.counters_skipped and all(
        k.endswith("num_batches_tracked") and k.startswith(("stem.", "res2.")) for k in check.counters_skipped
    )
    assert check.num_loaded == check.num_backbone_keys


def test_a_model_with_two_resnets_is_refused():
    class Two(torch.nn.Module):
        def __init__(self, a, b):
            super().__init__()
            self.backbone, self.target_backbone = a, b

    cfg = load_cfg(TOY_BASE)
    resnets = [build_resnet_backbone(cfg, ShapeSpec(channels=3)) for _ in range(2)]
    with pytest.raises(ExportError, match=r"2 detectron2 ResNets \['backbone', 'target_backbone'\]"):
        find_resnet(Two(*resnets), "two")


def test_a_checkpoint_of_the_r2o_model_exports_both_encoders(tmp_path):
    """The R2O model's own checkpoint (DetectionCheckpointer, as training saves it):
    the online encoder's export equals model.backbone's state, the target's
    model.target_backbone's, and it loads into the toy Semantic FPN."""
    from detectron2.checkpoint import DetectionCheckpointer

    cfg = load_cfg(
        os.path.join(REPO_ROOT, "configs", "r2o", "toy", "r2o_R18_toy.yaml"),
        ["MODEL.R2O.PROJECTOR_HIDDEN", "32", "MODEL.R2O.PREDICTOR_HIDDEN", "32", "MODEL.R2O.PROJECTOR_DIM", "16"],
    )
    model = build_model(cfg)
    with torch.no_grad():  # the two encoders apart, as after training
        for p in model.target_backbone.parameters():
            p.add_(1.0)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final", iteration=5)
    checkpoint = str(tmp_path / "model_final.pth")
    for encoder, module in (("online", model.backbone), ("target", model.target_backbone)):
        arrays = export_backbone(checkpoint, str(tmp_path / f"{encoder}.pkl"), encoder)
        state = module.state_dict()
        assert set(arrays) == set(state)
        assert all(torch.equal(torch.as_tensor(arrays[k]), v) for k, v in state.items())
    check = check_export(build_model(load_cfg(SEMANTIC_FPN, ["MODEL.DEVICE", "cpu"])), str(tmp_path / "online.pkl"))
    assert check.ok and check.num_loaded == check.num_backbone_keys, check.problems()
