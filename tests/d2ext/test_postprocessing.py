"""d2ext.postprocessing: same outputs as detectron2's sem_seg_postprocess, no same-size resize."""
import json
import os
import subprocess
import sys

import pytest
import torch

import d2ext  # noqa: F401
from d2ext import postprocessing
from d2ext.postprocessing import detectron2_sem_seg_postprocess, sem_seg_postprocess


@pytest.mark.parametrize(
    "padded, img_size, out_size",
    [
        ((5, 64, 96), (64, 96), (64, 96)),  # nothing to crop or resize
        ((5, 64, 96), (50, 81), (50, 81)),  # crop only (padding to a multiple of 32)
        ((5, 64, 96), (50, 81), (100, 162)),  # crop and upsample (test-time resize)
        ((5, 64, 96), (64, 96), (33, 47)),  # downsample, odd sizes
    ],
)
def test_equals_detectron2(padded, img_size, out_size):
    result = torch.randn(padded)
    ours = sem_seg_postprocess(result, img_size, *out_size)
    theirs = detectron2_sem_seg_postprocess(result, img_size, *out_size)
    assert ours.shape == (padded[0], *out_size)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_same_size_is_a_view_without_interpolation(monkeypatch):
    calls = []
    real = torch.nn.functional.interpolate
    monkeypatch.setattr(postprocessing.F, "interpolate", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = torch.randn(3, 40, 60)
    out = sem_seg_postprocess(result, (37, 58), 37, 58)
    assert calls == []
    assert out.data_ptr() == result.data_ptr()
    sem_seg_postprocess(result, (37, 58), 74, 116)
    assert calls == [1]


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CALLERS = (
    "detectron2.modeling.postprocessing",
    "detectron2.modeling.meta_arch.semantic_seg",
    "detectron2.modeling.meta_arch.panoptic_fpn",
)

# In a fresh process: what import d2ext leaves in place, and what building a model installs.
_CHILD = """
import importlib, json
import d2ext
from d2ext import postprocessing
from d2ext.engine import Trainer, load_cfg
callers = {callers!r}
ours = lambda: [importlib.import_module(m).sem_seg_postprocess is postprocessing.sem_seg_postprocess
                for m in callers]
before = ours()
Trainer.build_model(load_cfg("configs/baselines/toy/semantic_fpn_R18_toy.yaml", ["MODEL.DEVICE", "cpu"]))
print(json.dumps({{"before": before, "after": ours()}}))
"""


def test_installed_where_d2ext_builds_models_not_on_import():
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(callers=_CALLERS)],
        capture_output=True, text=True, check=True, timeout=300, cwd=REPO_ROOT,
    ).stdout
    states = json.loads(out.strip().splitlines()[-1])
    assert states == {"before": [False] * 3, "after": [True] * 3}
