"""Smoke test per toy config: build from the yaml, train a few iterations at a
small input size with the Trainer, evaluate on a few val images with Trainer.test."""
import math

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from d2ext.engine import Trainer, load_cfg

from .conftest import SMALL, TOY_CONFIGS

FEW_VAL = "toy_sem_seg_val_icnet_smoke"


@pytest.fixture(scope="module")
def few_val_images():
    """The first 2 images of toy_sem_seg_val, with its metadata (removed afterwards)."""
    DatasetCatalog.register(FEW_VAL, lambda: DatasetCatalog.get("toy_sem_seg_val")[:2])
    meta = MetadataCatalog.get("toy_sem_seg_val").as_dict()
    meta.pop("name")
    MetadataCatalog.get(FEW_VAL).set(**meta)
    yield FEW_VAL
    DatasetCatalog.remove(FEW_VAL)
    MetadataCatalog.remove(FEW_VAL)


@pytest.mark.parametrize("variant", ["image", "feature"])
def test_train_and_evaluate(variant, few_val_images, tmp_path):
    cfg = load_cfg(TOY_CONFIGS[variant], SMALL + [
        "OUTPUT_DIR", str(tmp_path),
        "SOLVER.MAX_ITER", "2",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "INPUT.MIN_SIZE_TRAIN", "(64, 80)",  # 80 is not a multiple of 32: padded
        "INPUT.MAX_SIZE_TRAIN", "100",
        "INPUT.MIN_SIZE_TEST", "72",
        "INPUT.MAX_SIZE_TEST", "100",
        "DATALOADER.NUM_WORKERS", "0",
        "DATASETS.TEST", f"('{few_val_images}',)",
    ])
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = trainer.storage.latest()
    for key in ("loss_guidance_1_16", "loss_guidance_1_8", "loss_sem_seg"):
        assert math.isfinite(losses[key][0])

    results = Trainer.test(cfg, trainer.model)
    miou = results["sem_seg"]["mIoU"]
    assert math.isfinite(miou) and 0.0 <= miou <= 100.0
