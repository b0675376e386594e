"""--resume after SIGKILL: iteration, model, optimizer, scheduler and data stream exactly as
saved, and a killed-and-resumed run ends with the weights of an uninterrupted one, bit for bit."""
import logging
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

from d2ext.data.resumable_loader import ResumableTrainLoader
from d2ext.engine import Trainer, load_cfg
from tests.conftest import REPO_ROOT
from tests.d2ext.engine.toy_train_config import CONFIG, tiny_opts

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resume_worker.py")
# PointRend: RPN and ROI sampling (torch.randperm) and point sampling (torch.rand) draw
# from the global generators every step, the mapper's crop/flip per sample.
POINTREND = os.path.join(REPO_ROOT, "configs", "pointrend", "toy", "pointrend_rcnn_R18_FPN_toy.yaml")
MAX_ITER, PERIOD = 8, 3  # checkpoints after iterations 2 and 5, final after 7
TINY_POINTREND = [
    "DATASETS.TEST", "()",  # no evaluation: only the training is compared
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.FC_DIM", "64",
    "MODEL.POINT_HEAD.FC_DIM", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
]


def _equal_nested(a, b, path="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _equal_nested(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _equal_nested(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_resume_after_sigkill_restores_state_exactly(tmp_path):
    out = str(tmp_path)
    opts = tiny_opts(out, max_iter=1000, checkpoint_period=4)
    cmd = [sys.executable, os.path.join(REPO_ROOT, "train_net.py"), "--config-file", CONFIG, *opts]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tag = tmp_path / "last_checkpoint"
    deadline = time.time() + 300
    try:
        while not (tag.exists() and tag.read_text() == "model_0000007.pth"):
            assert proc.poll() is None, proc.stderr.read()[-4000:]
            assert time.time() < deadline, "training did not reach iteration 8"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    saved = torch.load(tmp_path / "model_0000007.pth", weights_only=False)
    cfg = load_cfg(CONFIG, opts)
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=True)
    assert trainer.iter == 7 and trainer.start_iter == 8
    assert saved["trainer"]["iteration"] == 7
    _equal_nested(saved["model"], trainer.model.state_dict(), "model")
    _equal_nested(saved["trainer"]["_trainer"]["optimizer"], trainer.optimizer.state_dict(), "optimizer")
    assert trainer.optimizer.state_dict()["state"], "optimizer state (momentum) was not restored"
    _equal_nested(saved["trainer"]["hooks"]["LRScheduler"], trainer.scheduler.state_dict(), "scheduler")

    assert trainer._trainer.data_loader.state_dict() == saved["trainer"]["data_loader"]

    # and training goes on from there
    trainer.max_iter = 10
    trainer.train()
    assert trainer.iter == 10  # detectron2 leaves iter == max_iter after a finished run
    assert (tmp_path / "model_final.pth").exists()


def _train(out, *, workers: int, num_gpus: int = 1, kill_at=None, resume=False) -> None:
    opts = [*tiny_opts(str(out), MAX_ITER, PERIOD), *TINY_POINTREND, "DATALOADER.NUM_WORKERS", str(workers)]
    cmd = [sys.executable, WORKER, "--config-file", POINTREND, "--num-gpus", str(num_gpus)]
    cmd += ["--resume"] * resume + (["--kill-at", str(kill_at)] if kill_at is not None else []) + opts
    # one thread per process: the same CPU kernels in every run, and no oversubscribed cores
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if kill_at is None:
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:  # one process: killed by the signal; launched ranks: the launcher fails
        assert proc.returncode in (-signal.SIGKILL, 1), proc.stderr[-4000:]
        assert not os.path.exists(os.path.join(out, "model_final.pth")), "the run was not killed"


def _kill_iteration() -> int:
    """A random iteration after the first checkpoint; D2EXT_TEST_KILL_AT replays one."""
    if os.environ.get("D2EXT_TEST_KILL_AT"):
        return int(os.environ["D2EXT_TEST_KILL_AT"])
    return random.Random().randint(PERIOD, MAX_ITER - 1)


def _assert_same_final_checkpoint(reference_dir, resumed_dir, kill_at) -> None:
    a = torch.load(os.path.join(reference_dir, "model_final.pth"), weights_only=False)
    b = torch.load(os.path.join(resumed_dir, "model_final.pth"), weights_only=False)
    # every tensor of the model, the optimizer (momentum), the scheduler and the data state
    _equal_nested(a, b, f"final checkpoint (killed at iteration {kill_at})")
    assert a["trainer"]["_trainer"]["optimizer"]["state"]


def _killed_and_resumed(out, *, workers: int, num_gpus: int = 1) -> int:
    kill_at = _kill_iteration()
    _train(out, workers=workers, num_gpus=num_gpus, kill_at=kill_at)
    expected = f"model_{(kill_at // PERIOD) * PERIOD - 1:07d}.pth"
    assert (out / "last_checkpoint").read_text() == expected
    _train(out, workers=workers, num_gpus=num_gpus, resume=True)
    return kill_at


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    _train(out, workers=0)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_and_resumed_run_ends_bit_identical(uninterrupted_run, tmp_path, workers):
    # the reference ran without DataLoader workers: their number changes nothing either
    kill_at = _killed_and_resumed(tmp_path, workers=workers)
    _assert_same_final_checkpoint(uninterrupted_run, tmp_path, kill_at)


def test_two_processes_killed_and_resumed_end_bit_identical(tmp_path):
    # rank 1's data position is in rank 0's checkpoint (only rank 0 writes one)
    (tmp_path / "uninterrupted").mkdir()
    (tmp_path / "resumed").mkdir()
    _train(tmp_path / "uninterrupted", workers=0, num_gpus=2)
    kill_at = _killed_and_resumed(tmp_path / "resumed", workers=0, num_gpus=2)
    _assert_same_final_checkpoint(tmp_path / "uninterrupted", tmp_path / "resumed", kill_at)


def _tiny_trainer(out, *opts) -> Trainer:
    cfg = load_cfg(CONFIG, [*tiny_opts(str(out), max_iter=2), *opts])
    cfg.freeze()
    return Trainer(cfg)


def test_each_step_draws_from_its_own_seed(tmp_path):
    trainer = _tiny_trainer(tmp_path)
    assert isinstance(trainer._trainer.data_loader, ResumableTrainLoader)
    draws = []
    forward = trainer.model.forward

    def recording_forward(batched_inputs):
        draws.append((torch.rand(4), np.random.rand(4), random.random()))
        return forward(batched_inputs)

    trainer.model.forward = recording_forward
    with EventStorage(0):
        for it, noise in [(5, 10), (5, 1000), (6, 10)]:
            torch.rand(noise), np.random.rand(noise), random.random()  # whatever ran before the step
            trainer.iter = it
            trainer.run_step()
    assert torch.equal(draws[0][0], draws[1][0]) and np.array_equal(draws[0][1], draws[1][1])
    assert draws[0][2] == draws[1][2]
    assert not torch.equal(draws[0][0], draws[2][0])


def test_checkpoint_without_data_state_resumes_with_a_warning(tmp_path, caplog):
    trainer = _tiny_trainer(tmp_path)
    state = trainer.state_dict()
    assert state["data_loader"]["ranks"] == [{"next_position": 0, "pending": []}]
    del state["data_loader"]  # as written by d2ext before it saved the data state
    with caplog.at_level(logging.WARNING, logger="d2ext.engine.trainer"):
        trainer.load_state_dict(state)
    assert "the data order restarts" in caplog.text
    trainer.train()
    assert trainer.iter == 2


def test_resumable_data_off_uses_detectron2s_loader(tmp_path, caplog):
    trainer = _tiny_trainer(tmp_path, "D2EXT.RESUMABLE_DATA", "False")
    assert not isinstance(trainer._trainer.data_loader, ResumableTrainLoader)
    trainer.train()
    state = trainer.state_dict()
    assert "data_loader" not in state and "optimizer" in state["_trainer"]
    with caplog.at_level(logging.WARNING, logger="d2ext.engine.trainer"):
        trainer.load_state_dict(state)
    assert "D2EXT.RESUMABLE_DATA is off" in caplog.text
