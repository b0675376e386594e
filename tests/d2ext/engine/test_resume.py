"""--resume after SIGKILL: iteration, model, optimizer and scheduler exactly as saved."""
import os
import signal
import subprocess
import sys
import time

import torch

from d2ext.engine import Trainer, load_cfg
from tests.conftest import REPO_ROOT
from tests.d2ext.engine.toy_train_config import CONFIG, tiny_opts


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

    # and training goes on from there
    trainer.max_iter = 10
    trainer.train()
    assert trainer.iter == 10  # detectron2 leaves iter == max_iter after a finished run
    assert (tmp_path / "model_final.pth").exists()
