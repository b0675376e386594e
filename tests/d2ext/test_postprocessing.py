"""d2ext.postprocessing: same outputs as detectron2's sem_seg_postprocess, no same-size resize."""
import importlib

import pytest
import torch

import d2ext  # noqa: F401  (installs the replacement)
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


@pytest.mark.parametrize(
    "module",
    [
        "detectron2.modeling.postprocessing",
        "detectron2.modeling.meta_arch.semantic_seg",
        "detectron2.modeling.meta_arch.panoptic_fpn",
    ],
)
def test_installed_in_detectron2(module):
    assert importlib.import_module(module).sem_seg_postprocess is sem_seg_postprocess
