"""Fixtures of the MaskFormer tests: the config files, tiny model settings and a
small toy dataset generated in a temporary root."""
import os

import pytest
from detectron2.data import DatasetCatalog

import d2ext_projects  # noqa: F401  (registers MaskFormer)
from d2ext.data.datasets import toy

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CONFIGS = os.path.join(REPO_ROOT, "configs", "maskformer")
TOY_PANOPTIC = os.path.join(CONFIGS, "toy", "maskformer_R18_toy_panoptic.yaml")
TOY_SEMANTIC = os.path.join(CONFIGS, "toy", "maskformer_R18_toy_semantic.yaml")

# A narrow MaskFormer on 96-128 px inputs: a training step takes well under a second.
TINY = [
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.NHEADS", "4",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "12",
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "128",
    "TEST.DETECTIONS_PER_IMAGE", "20",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "1",
    "DATALOADER.NUM_WORKERS", "0",
]


@pytest.fixture(scope="module")
def small_toy(tmp_path_factory):
    """The toy datasets regenerated with 6 train and 3 val images in a fresh root (per
    test module); the normal registration comes back afterwards."""
    patch = pytest.MonkeyPatch()
    root = str(tmp_path_factory.mktemp("maskformer_datasets"))
    patch.setenv("DETECTRON2_DATASETS", root)
    patch.setattr(toy, "TOY_NUM_TRAIN", 6)
    patch.setattr(toy, "TOY_NUM_VAL", 3)
    toy.register_toy_datasets()
    try:
        yield {name: DatasetCatalog.get(name) for name in ("toy_panoptic_train", "toy_panoptic_val")}
    finally:
        patch.undo()
        toy.register_toy_datasets()
