"""Every official config's model has the official state-dict keys and shapes.

tests/fixtures/official_keys_all.json.xz holds, for every official config that d2ext
copies (detectron2 v0.6's PointRend, the official MaskFormer and Mask2Former image
configs: 8 + 30 + 47), the sorted keys and shapes of the model that the official code
builds from the official file at full size, written by
tests/fixtures/make_official_keys_all.py from the official source trees. d2ext's model,
built from d2ext's copy (configs/<family>/), must have exactly those keys and shapes.

d2ext's models are built under ``torch.device("meta")`` (no memory, no initialization
work: ~85 full-size models in seconds); the per-family tests
(tests/projects/*/test_*official_keys.py) build some of the same configs on the CPU
and load weights into them.
"""
from __future__ import annotations

import glob
import json
import lzma
import os

import d2ext  # noqa: F401  (compat before detectron2)

import pytest
import torch

import d2ext_projects.maskformer  # noqa: F401  (registers MaskFormer, Mask2Former's parts)
import d2ext_projects.pointrend  # noqa: F401  (registers PointRend's heads)
from d2ext.engine import Trainer, load_cfg
from tests.conftest import REPO_ROOT

FAMILIES = {"pointrend": 8, "maskformer": 30, "mask2former": 47}

with lzma.open(os.path.join(REPO_ROOT, "tests", "fixtures", "official_keys_all.json.xz"), "rt") as f:
    OFFICIAL = json.load(f)


def official_copies():
    """The copies of official configs in configs/ (not the Base-* files, not toy/)."""
    return sorted(
        os.path.relpath(p, REPO_ROOT)
        for family in FAMILIES
        for p in glob.glob(os.path.join(REPO_ROOT, "configs", family, "**", "*.yaml"), recursive=True)
        if "/toy/" not in p and not os.path.basename(p).startswith("Base-")
    )


def test_the_fixture_covers_every_official_config_copy():
    copies = official_copies()
    assert sorted(OFFICIAL["configs"]) == copies  # a new copy needs its official keys
    for family, count in FAMILIES.items():
        assert sum(e["family"] == family for e in OFFICIAL["configs"].values()) == count, family


def _mismatch(config: str) -> str:
    entry = OFFICIAL["configs"][config]
    official = {k: tuple(shape) for k, shape in OFFICIAL["keysets"][entry["keyset"]]}
    cfg = load_cfg(os.path.join(REPO_ROOT, config), ["MODEL.DEVICE", "meta", "MODEL.WEIGHTS", ""])
    with torch.device("meta"):
        model = Trainer.build_model(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(official) - set(ours))
    unexpected = sorted(set(ours) - set(official))
    shapes = [f"{k}: {ours[k]} (official {official[k]})" for k in sorted(set(ours) & set(official))
              if ours[k] != official[k]]
    if not (missing or unexpected or shapes):
        return ""
    return (f"{config} vs the official {entry['family']} {entry['official_config']}: "
            f"{len(missing)} missing {missing[:10]}, {len(unexpected)} unexpected {unexpected[:10]}, "
            f"{len(shapes)} of another shape {shapes[:10]}")


@pytest.mark.parametrize("config", official_copies())
def test_keys_and_shapes_are_the_officials(config):
    assert config in OFFICIAL["configs"], f"{config}: no official keys in the fixture"
    assert _mismatch(config) == ""
