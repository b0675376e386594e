"""Fixtures of the dataset tests: catalog isolation and one small generated toy dataset."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import d2ext  # noqa: F401  (compat before detectron2)

from d2ext.data.datasets import toy

SMALL_TRAIN, SMALL_VAL = 30, 10


@pytest.fixture(autouse=True)
def _restore_catalogs(isolated_catalogs):
    """Every test here leaves the dataset catalogs as it found them."""
    yield


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A datasets root holding a small toy dataset (SMALL_TRAIN / SMALL_VAL images)."""
    root = tmp_path_factory.mktemp("toy_root")
    toy.generate_toy_dataset(str(root / "toy"), SMALL_TRAIN, SMALL_VAL, toy.TOY_SEED)
    return str(root)


@pytest.fixture
def small_toy(monkeypatch, toy_root):
    """The toy module configured for the small dataset of ``toy_root`` (no regeneration)."""
    monkeypatch.setattr(toy, "TOY_NUM_TRAIN", SMALL_TRAIN)
    monkeypatch.setattr(toy, "TOY_NUM_VAL", SMALL_VAL)
    return toy_root


@pytest.fixture
def write_json():
    def write(path, obj):
        os.makedirs(os.path.dirname(str(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f)
        return str(path)

    return write


@pytest.fixture
def write_png():
    def write(path, array):
        os.makedirs(os.path.dirname(str(path)), exist_ok=True)
        Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
        return str(path)

    return write
