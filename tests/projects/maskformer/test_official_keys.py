"""The official MaskFormer checkpoints load into d2ext's MaskFormer as they are.

tests/fixtures/maskformer_official_keys.json holds the state-dict keys and shapes of
the official models (facebookresearch/MaskFormer, built by its own code from its config
files), written by tests/fixtures/make_maskformer_official_keys.py, which also checked
that the official code loads a .pkl in the published layout (pixel decoder directly
under ``sem_seg_head.``) with 0 missing / 0 unexpected keys. d2ext's models, built from
d2ext's copies of those configs, must have exactly those keys and shapes; such a .pkl
(random values) must load through DetectionCheckpointer, as MODEL.WEIGHTS does, with
none missing or unexpected and equal values; d2ext's earlier names load too.
"""
from __future__ import annotations

import functools
import json
import os
import pickle
import re
from typing import Dict

import d2ext  # noqa: F401  (compat before detectron2)

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

import d2ext_projects.maskformer  # noqa: F401  (registers MaskFormer)
from d2ext.engine import Trainer, load_cfg
from d2ext_projects.maskformer.checkpoint_keys import upgrade_head_keys
from tests.conftest import REPO_ROOT

with open(os.path.join(REPO_ROOT, "tests", "fixtures", "maskformer_official_keys.json")) as f:
    OFFICIAL = json.load(f)

MODELS = [
    "ade20k_R50", "coco_panoptic_R50", "cityscapes_R101", "ade20k_R101c",
    "ade20k_per_pixel_baseline_R50", "ade20k_per_pixel_baseline_plus_R50",
]
# Loaded from the checkpoint but then set from the config (projects/maskformer/README.md).
FROM_CONFIG = {"criterion.empty_weight"}

# new (official) key -> d2ext's earlier name, to write old checkpoints
OLD_NAMES = [
    (r"\.pixel_decoder\.adapter_(\d+)\.", lambda m: f".pixel_decoder.lateral_convs.{int(m[1]) - 1}."),
    (r"\.pixel_decoder\.layer_(\d+)\.", lambda m: f".pixel_decoder.output_convs.{int(m[1]) - 1}."),
    (r"\.pixel_decoder\.transformer\.encoder\.", ".pixel_decoder.transformer."),
    (r"\.predictor\.transformer\.", ".predictor."),
    (r"\.multihead_attn\.", ".cross_attn."),
]


def old_name(key: str) -> str:
    for pattern, repl in OLD_NAMES:
        key = re.sub(pattern, repl, key)
    return key


def published_name(key: str) -> str:
    """The published .pkl layout: no ``pixel_decoder.`` level (the official head's v1)."""
    return key.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.", 1)


@functools.lru_cache(maxsize=None)
def build(name: str) -> torch.nn.Module:
    """One model per config for the whole file (each test loads all of its weights)."""
    entry = OFFICIAL[name]
    cfg = load_cfg(os.path.join(REPO_ROOT, entry["d2ext_config"]), entry["opts"])
    torch.manual_seed(0)
    return Trainer.build_model(cfg).eval()


def random_weights(name: str, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v, dtype=np.float32) for k, v in OFFICIAL[name]["keys"].items()}


@pytest.mark.parametrize("name", MODELS)
def test_keys_and_shapes_are_the_official(name):
    official = {k: tuple(v) for k, v in OFFICIAL[name]["keys"].items()}
    ours = {k: tuple(v.shape) for k, v in build(name).state_dict().items()}
    assert sorted(set(official) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(official)) == []  # unexpected
    assert {k for k in ours if ours[k] != official[k]} == set()


@pytest.mark.parametrize(
    "name, layout, heuristics",
    [
        ("ade20k_R50", "published", False),
        ("coco_panoptic_R50", "published", False),
        ("cityscapes_R101", "published", False),
        ("ade20k_R101c", "published", False),  # DeepLab ResNet (stem.conv1-3)
        # matching_heuristics (as third-party .pkl files set) and the model's own layout
        ("ade20k_R50", "published", True),
        ("coco_panoptic_R50", "state_dict", False),
    ],
)
def test_official_pkl_loads_through_checkpointer(name, layout, heuristics, tmp_path):
    """A model-zoo .pkl ({"model": numpy arrays, "__author__"}) with the official keys
    loads with DetectionCheckpointer, as MODEL.WEIGHTS does: none missing or unexpected,
    every value equal. The official code itself loads only the published layout."""
    weights = random_weights(name, seed=len(layout) + heuristics)
    rename = published_name if layout == "published" else (lambda k: k)
    data = {"model": {rename(k): v for k, v in weights.items()}, "__author__": "test"}
    if heuristics:
        data["matching_heuristics"] = True
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    model = build(name)
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    path.unlink()  # hundreds of MB
    assert incompatible.missing_keys == []
    assert incompatible.unexpected_keys == []
    state = model.state_dict()
    for key, value in weights.items():
        if key not in FROM_CONFIG:
            assert torch.equal(state[key], torch.from_numpy(value)), key
    no_object = model.sem_seg_head.predictor.num_classes
    assert state["criterion.empty_weight"][no_object] == pytest.approx(0.1)  # NO_OBJECT_WEIGHT


@pytest.mark.parametrize("name", ["ade20k_R50", "coco_panoptic_R50"])
def test_earlier_d2ext_names_load_with_equal_tensors(name):
    weights = {k: torch.from_numpy(v) for k, v in random_weights(name, seed=7).items()}
    # d2ext's earlier checkpoints had no criterion.empty_weight (it was not persistent)
    old = {old_name(k): v for k, v in weights.items() if k not in FROM_CONFIG}
    renamed = {k for k in weights if old_name(k) != k}
    assert len(renamed) > 100, "the old-name table no longer matches"
    model = build(name)
    model.load_state_dict(old, strict=True)  # raises on missing / unexpected keys
    state = model.state_dict()
    for key in renamed:
        assert torch.equal(state[key], weights[key]), key


def test_upgrade_refuses_a_parameter_under_two_names():
    state = {"sem_seg_head.adapter_1.weight": 0, "sem_seg_head.pixel_decoder.adapter_1.weight": 1}
    with pytest.raises(KeyError, match="both"):
        upgrade_head_keys(state, "sem_seg_head.")


def test_upgrade_leaves_current_names_and_other_modules_alone():
    state = {
        "backbone.res2.0.conv1.weight": 0,
        "sem_seg_head.pixel_decoder.layer_4.weight": 1,
        "sem_seg_head.predictor.transformer.decoder.layers.0.multihead_attn.in_proj_weight": 2,
    }
    assert upgrade_head_keys(dict(state), "sem_seg_head.") == 0
