"""Fixtures of the AdaptIS tests: the config files and tiny model settings."""
import os

import pytest
import torch

import d2ext_projects  # noqa: F401  (registers AdaptIS)
from d2ext.engine import load_cfg, Trainer

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = os.path.join(REPO_ROOT, "configs", "adaptis")
TOY_STAGE1 = os.path.join(CONFIGS, "toy", "adaptis_R18_toy_panoptic_stage1.yaml")
TOY_STAGE2 = os.path.join(CONFIGS, "toy", "adaptis_R18_toy_panoptic_stage2.yaml")
RODS_STAGE1 = os.path.join(CONFIGS, "toy_rods", "adaptis_R18_toy_rods_stage1.yaml")
RODS_STAGE2 = os.path.join(CONFIGS, "toy_rods", "adaptis_R18_toy_rods_stage2.yaml")

# A narrow AdaptIS on 64-96 px inputs: a training step takes a fraction of a second.
TINY = [
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ADAPTIS.FUSE_DIM", "32",
    "MODEL.ADAPTIS.INSTANCE_HEAD.CHANNELS", "8",
    "MODEL.ADAPTIS.CONTROLLER.DIM", "8",
    "MODEL.ADAPTIS.TRAIN.NUM_POINTS", "4",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "1",
    "DATALOADER.NUM_WORKERS", "0",
]


def tiny_cfg(config=TOY_STAGE1, opts=()):
    return load_cfg(config, TINY + list(opts))


def build(config=TOY_STAGE1, opts=()):
    torch.manual_seed(0)
    return Trainer.build_model(tiny_cfg(config, opts))


@pytest.fixture
def toy_batch():
    """Two mapped training dicts of the tiny toy dataset (with things) and one without things."""
    from detectron2.data import DatasetCatalog

    from d2ext.data.mapper import CommonDatasetMapper

    def make(config=TOY_STAGE1, opts=()):
        cfg = tiny_cfg(config, opts)
        mapper = CommonDatasetMapper(cfg, is_train=True)
        return [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:2]]

    return make
