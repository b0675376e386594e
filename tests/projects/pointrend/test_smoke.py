"""Smoke test per config family: build from the toy yaml, train a few iterations on toy
data at a small input size, evaluate with d2ext's Trainer.test on a few images (CPU)."""
import d2ext  # noqa: F401

import pytest

from d2ext.engine import Trainer

from .conftest import IMPLICIT, INSTANCE, SEMANTIC, tiny_cfg

SMALL_RUN = [
    "SOLVER.MAX_ITER", "2",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "()",
    "SOLVER.CHECKPOINT_PERIOD", "1000",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96",
    "DATALOADER.NUM_WORKERS", "0",
    "MODEL.POINT_HEAD.TRAIN_NUM_POINTS", "64",
]


@pytest.mark.parametrize(
    "config, metric",
    [(INSTANCE, "segm"), (IMPLICIT, "segm"), (SEMANTIC, "sem_seg")],
    ids=["pointrend_instance", "implicit_pointrend", "pointrend_semantic"],
)
def test_config_trains_and_evaluates(config, metric, tiny_toy, tmp_path):
    cfg = tiny_cfg(config, "OUTPUT_DIR", str(tmp_path), *SMALL_RUN)
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # ends with the evaluation hook: Trainer.test(cfg, model) on the 3 val images
    assert trainer.iter == cfg.SOLVER.MAX_ITER
    latest = trainer.storage.latest()
    losses = {k: v for k, (v, _) in latest.items() if k.startswith("loss")}
    assert losses and all(v == v for v in losses.values()), losses  # present, no NaN
    results = trainer._last_eval_results
    assert metric in results and results[metric]
