"""Smoke tests on tiny toy datasets: every toy yaml trains 2 iterations through
the Trainer (stage 2 from stage 1's model_final.pth) and evaluates (PQ, mask AP,
mIoU); an --eval-only run of train_net.py on stage 2's weights."""
import os

import pytest
from detectron2.engine import default_argument_parser

import train_net
from d2ext.data.datasets import toy
from d2ext.engine import Trainer, load_cfg
from tests.projects.adaptis.conftest import RODS_STAGE1, RODS_STAGE2, TINY, TOY_STAGE1, TOY_STAGE2


# A 2-iteration model's masks sit around p = 0.15 and its proposal map is flat:
# evaluate with thresholds low enough (and a background weak enough) that
# instances exist and reach every evaluator.
LOW_THRESHOLDS = [
    "MODEL.ADAPTIS.TEST.MASK_THRESH", "0.1",
    "MODEL.ADAPTIS.TEST.THING_PROB_THRESH", "0.0",
    "MODEL.ADAPTIS.TEST.PROPOSAL_THRESH", "0.0",
    "MODEL.ADAPTIS.TEST.OVERLAP_THRESH", "0.9",
    "MODEL.ADAPTIS.TEST.STUFF_PROB_MULT", "0.2",
]


def opts(output_dir, weights=None, max_iter=2):
    out = TINY + LOW_THRESHOLDS + [
        "OUTPUT_DIR", str(output_dir),
        "SOLVER.MAX_ITER", str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "TEST.EVAL_PERIOD", "0",
    ]
    return out + (["MODEL.WEIGHTS", str(weights)] if weights is not None else [])


def train_and_test(config, output_dir, weights=None):
    cfg = load_cfg(config, opts(output_dir, weights))
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert os.path.exists(os.path.join(output_dir, "model_final.pth"))
    results = Trainer.test(cfg, trainer.model)
    for task, metric in [("panoptic_seg", "PQ"), ("segm", "AP"), ("sem_seg", "mIoU")]:
        assert isinstance(results[task][metric], float), (task, results[task])
    return os.path.join(output_dir, "model_final.pth"), results


def test_toy_panoptic_stage1_stage2_and_eval_only(tiny_toy, tmp_path):
    stage1, _ = train_and_test(TOY_STAGE1, tmp_path / "stage1")
    stage2, _ = train_and_test(TOY_STAGE2, tmp_path / "stage2", weights=stage1)
    args = default_argument_parser().parse_args(
        ["--config-file", TOY_STAGE2, "--eval-only"] + opts(tmp_path / "eval", weights=stage2)
    )
    results = train_net.main(args)
    assert {"panoptic_seg", "segm", "sem_seg"} <= set(results)


def test_toy_rods_stage1_stage2(tiny_toy, tmp_path, monkeypatch):
    if not hasattr(toy, "TOY_RODS_NUM_TRAIN"):
        pytest.skip("toy_rods is not in d2ext.data.datasets.toy yet")
    monkeypatch.setattr(toy, "TOY_RODS_NUM_TRAIN", 4)
    monkeypatch.setattr(toy, "TOY_RODS_NUM_VAL", 2)
    stage1, _ = train_and_test(RODS_STAGE1, tmp_path / "stage1")
    train_and_test(RODS_STAGE2, tmp_path / "stage2", weights=stage1)
