"""The official Mask2Former checkpoints load into d2ext's Mask2Former as they are.

tests/fixtures/mask2former_official_keys.json holds the state-dict keys and shapes of
the official models (facebookresearch/Mask2Former, built by its own code from its config
files at full size), written by tests/fixtures/make_mask2former_official_keys.py, which
also checked that the official code loads a .pkl in the published layout (pixel decoder
directly under ``sem_seg_head.``) with 0 missing / 0 unexpected keys. d2ext's models,
built from d2ext's copies of those configs (configs/mask2former/), must have exactly
those keys and shapes, and such a .pkl (random values) must load through
DetectionCheckpointer, as MODEL.WEIGHTS does, with none missing or unexpected.
"""
from __future__ import annotations

import functools
import json
import os
import pickle
from typing import Dict

import d2ext  # noqa: F401  (compat before detectron2)

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

import d2ext_projects.maskformer  # noqa: F401  (registers MaskFormer and Mask2Former's parts)
from d2ext.engine import Trainer, load_cfg
from tests.conftest import REPO_ROOT
from tests.projects.maskformer.test_official_keys import published_name

with open(os.path.join(REPO_ROOT, "tests", "fixtures", "mask2former_official_keys.json")) as f:
    OFFICIAL = json.load(f)

MODELS = ["coco_panoptic_R50", "coco_instance_R50", "ade20k_semantic_R50", "cityscapes_semantic_R101"]
FROM_CONFIG = {"criterion.empty_weight"}


@functools.lru_cache(maxsize=None)
def build(name: str) -> torch.nn.Module:
    entry = OFFICIAL[name]
    cfg = load_cfg(os.path.join(REPO_ROOT, entry["d2ext_config"]), entry["opts"])
    torch.manual_seed(0)
    return Trainer.build_model(cfg).eval()


def random_weights(name: str, seed: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: np.asarray(rng.standard_normal(v, dtype=np.float32)) for k, v in OFFICIAL[name]["keys"].items()
            if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name", MODELS)
def test_keys_and_shapes_are_the_official(name):
    official = {k: tuple(v) for k, v in OFFICIAL[name]["keys"].items()}
    ours = {k: tuple(v.shape) for k, v in build(name).state_dict().items()}
    assert sorted(set(official) - set(ours)) == []  # missing
    assert sorted(set(ours) - set(official)) == []  # unexpected
    assert {k for k in ours if ours[k] != official[k]} == set()


@pytest.mark.parametrize("name", MODELS)
def test_official_pkl_loads_through_checkpointer(name, tmp_path):
    weights = random_weights(name, seed=1)
    data = {"model": {published_name(k): v for k, v in weights.items()}, "__author__": "test"}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    model = build(name)
    checkpointer = DetectionCheckpointer(model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    path.unlink()
    assert [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")] == []
    assert incompatible.unexpected_keys == []
    state = model.state_dict()
    for key, value in weights.items():
        if key not in FROM_CONFIG:
            assert torch.equal(state[key], torch.from_numpy(value)), key
