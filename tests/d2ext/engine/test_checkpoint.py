"""A checkpoint cut off while being written is never picked up as the latest; model-zoo pickles."""
import os
import signal
import subprocess
import sys
import textwrap

import d2ext  # noqa: F401
import numpy as np
import pytest
import torch

from d2ext.engine.checkpoint import AtomicCheckpointer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_save_writes_complete_file_and_tag(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = AtomicCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000009", iteration=9)
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000009.pth"
    assert torch.load(tmp_path / "model_0000009.pth", weights_only=False)["iteration"] == 9
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_process_killed_mid_save_keeps_previous_checkpoint(tmp_path):
    # The child saves one checkpoint, then is SIGKILLed halfway through writing
    # the second: its bytes hit the disk, but the process dies before renaming.
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        import d2ext, torch
        from d2ext.engine.checkpoint import AtomicCheckpointer
        model = torch.nn.Linear(3, 2)
        ckpt = AtomicCheckpointer(model, {str(tmp_path)!r})
        ckpt.save("model_0000004", iteration=4)
        real_save = torch.save
        def dying_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04 half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        ckpt.save("model_0000009", iteration=9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert not (tmp_path / "model_0000009.pth").exists()
    resumed = AtomicCheckpointer(torch.nn.Linear(3, 2), str(tmp_path))
    assert resumed.get_checkpoint_file().endswith("model_0000004.pth")
    assert resumed.resume_or_load("", resume=True)["iteration"] == 4


def test_model_zoo_pickle_loads_by_matching_heuristics(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    from d2ext.engine.checkpoint import write_model_zoo_pickle

    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "sub" / "weights.pkl"
    write_model_zoo_pickle({"fc.weight": weight, "fc.bias": np.zeros(2, np.float32)}, str(path), "test")
    assert os.listdir(path.parent) == ["weights.pkl"]
    # The plain name "fc.*" lands on the prefixed "backbone.fc.*" only by the heuristics.
    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.fc = torch.nn.Linear(3, 2)
    DetectionCheckpointer(model).load(str(path))
    assert torch.equal(model.backbone.fc.weight, torch.from_numpy(weight))


def test_model_zoo_pickle_failed_write_leaves_nothing(tmp_path):
    from d2ext.engine.checkpoint import write_model_zoo_pickle

    path = tmp_path / "weights.pkl"
    with pytest.raises(Exception):
        write_model_zoo_pickle({"bad": lambda: None}, str(path), "test")  # a lambda does not pickle
    assert os.listdir(tmp_path) == []
