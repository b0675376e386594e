"""Fixtures of the PointRend tests: tiny configs built from the toy yamls, a small toy dataset."""
import os

import pytest

import d2ext  # noqa: F401  (compat before detectron2)
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.data.datasets import catalog, toy
from d2ext.engine import load_cfg
from tests.conftest import REPO_ROOT

TOY_CONFIGS = os.path.join(REPO_ROOT, "configs", "pointrend", "toy")
INSTANCE = os.path.join(TOY_CONFIGS, "pointrend_rcnn_R18_FPN_toy.yaml")
IMPLICIT = os.path.join(TOY_CONFIGS, "implicit_pointrend_R18_FPN_toy.yaml")
SEMANTIC = os.path.join(TOY_CONFIGS, "pointrend_semantic_R18_FPN_toy.yaml")

# Narrow layers: the tests check behaviour, not accuracy.
TINY = [
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.ROI_MASK_HEAD.FC_DIM", "64",
    "MODEL.POINT_HEAD.FC_DIM", "32",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "TEST.DETECTIONS_PER_IMAGE", "10",
]


def tiny_cfg(config_file: str, *opts):
    cfg = load_cfg(config_file, [*TINY, *opts])
    return cfg


SMALL_TRAIN, SMALL_VAL = 6, 3


@pytest.fixture
def isolated_catalogs():
    """Whatever a test registers or replaces, the catalogs are restored afterwards."""
    datasets, metadata, specs = dict(DatasetCatalog), dict(MetadataCatalog), dict(catalog._SPECS)
    yield
    DatasetCatalog.clear()
    DatasetCatalog.update(datasets)
    MetadataCatalog.clear()
    MetadataCatalog.update(metadata)
    catalog._SPECS.clear()
    catalog._SPECS.update(specs)


@pytest.fixture(scope="session")
def pointrend_toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pointrend_toy")
    toy.generate_toy_dataset(str(root / "toy"), SMALL_TRAIN, SMALL_VAL, toy.TOY_SEED)
    return str(root)


@pytest.fixture
def small_toy(monkeypatch, isolated_catalogs, pointrend_toy_root):
    """The toy names registered for a small generated dataset (6 train, 3 val images)."""
    monkeypatch.setattr(toy, "TOY_NUM_TRAIN", SMALL_TRAIN)
    monkeypatch.setattr(toy, "TOY_NUM_VAL", SMALL_VAL)
    toy.register_toy_datasets(pointrend_toy_root)
    return pointrend_toy_root
