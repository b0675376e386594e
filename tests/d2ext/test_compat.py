"""Each adaptation in d2ext.compat is in force where needed and a no-op where not."""
import importlib.machinery
import sys

import numpy as np
import pytest
from PIL import Image

from d2ext import compat


def test_apply_is_idempotent_and_reports_what_it_did():
    first = compat.apply()
    assert compat.apply() == first
    assert len(first) == len(set(first))


def test_detectron2_06_numpy_and_pillow_uses_work():
    compat.apply()
    assert np.zeros(2).astype(np.float).dtype == np.float64
    assert np.array([1], dtype=np.int).dtype.kind == "i"
    assert Image.LINEAR == Image.BILINEAR
    # the modules that evaluate these at import time import fine
    import detectron2.data.transforms  # noqa: F401
    import detectron2.evaluation  # noqa: F401
    from detectron2.structures.masks import polygons_to_bitmask

    mask = polygons_to_bitmask([np.array([0, 0, 8, 0, 8, 8, 0, 8], dtype=np.float64)], 10, 10)
    assert mask.dtype == bool and mask.sum() > 40


def test_numpy_aliases_untouched_when_present(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(np, "float", sentinel, raising=False)
    monkeypatch.setattr(compat, "APPLIED", [])
    compat._numpy_aliases()
    assert np.float is sentinel
    assert "numpy.float" not in compat.APPLIED


def test_pillow_linear_untouched_when_present(monkeypatch):
    monkeypatch.setattr(Image, "LINEAR", 12345, raising=False)
    monkeypatch.setattr(compat, "APPLIED", [])
    compat._pil_linear()
    assert Image.LINEAR == 12345 and compat.APPLIED == []


def test_missing_compiled_ops_explain_themselves():
    import detectron2._C as C

    if compat.has_compiled_ops():
        pytest.skip("this detectron2 has its compiled ops")
    with pytest.raises(RuntimeError, match="without compiled ops"):
        C.nms_rotated  # noqa: B018
    import detectron2.layers  # noqa: F401  (imports _C at import time)


def test_compiled_ops_stub_not_installed_when_real_ops_exist(monkeypatch):
    monkeypatch.delitem(sys.modules, "detectron2._C", raising=False)
    real_spec = importlib.machinery.ModuleSpec("detectron2._C", loader=None, origin="/x/_C.so")
    monkeypatch.setattr(compat.importlib.util, "find_spec", lambda name: real_spec)
    monkeypatch.setattr(compat, "APPLIED", [])
    compat._compiled_ops_stub()
    assert "detectron2._C" not in sys.modules and compat.APPLIED == []


def test_pkg_resources_shim_finds_model_zoo_configs():
    from detectron2 import model_zoo

    path = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    assert path.endswith("mask_rcnn_R_50_FPN_1x.yaml")


def test_numpy_in1d_for_cityscapesscripts():
    compat.apply()
    got = np.in1d(np.array([[1, 5], [3, 7]]), [3, 5])
    assert got.tolist() == [False, True, True, False]
    assert np.in1d([1, 2], [2], invert=True).tolist() == [True, False]


def test_environment_report_works_without_compiled_ops():
    # default_setup (train_net.py) logs it; it queries detectron2._C
    from detectron2.utils.collect_env import collect_env_info

    report = collect_env_info()
    assert "detectron2" in report and "PyTorch" in report
