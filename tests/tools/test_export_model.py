"""tools/export_model.py: the CLI's files, its check against eager, and its named errors."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from d2ext.deploy import ExportError, load_exported

from .conftest import load_tool

export_tool = load_tool("export_model")


def _run(args):
    return export_tool.main([str(a) for a in args])


def test_onnx_export_of_a_sample_image_writes_model_and_metadata(tiny_model_dir, tmp_path):
    config, weights = tiny_model_dir["semantic"]
    image_path = str(tmp_path / "sample.png")
    cv2.imwrite(image_path, np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    out = tmp_path / "export"
    meta = _run(["--config-file", config, "--format", "onnx", "--output", out,
                 "--sample-image", image_path, "MODEL.WEIGHTS", weights])
    # the test-time resize (MIN_SIZE_TEST 64, MAX 96) of a 50 x 70 image: 64 x 90
    assert meta["input_shape"] == [1, 3, 64, 90]
    assert meta["batch_norms_folded"] == 20  # the ResNet-18's FrozenBN, folded by default
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk["verify"]["max_abs_diff"] < 1e-3 and on_disk["verify"]["argmax_agreement"] >= 0.999
    assert on_disk["task"] == "sem_seg" and os.path.isfile(out / "model.onnx")
    model = load_exported(str(out), threads=1)
    with pytest.raises(ValueError, match=r"\[1, 3, 64, 90\] \(export.json input_shape\), got \[1, 3, 64, 96\]"):
        model(torch.zeros(1, 3, 64, 96))


def test_scripting_names_its_cause(tiny_model_dir, tmp_path):
    config, _ = tiny_model_dir["semantic"]
    with pytest.raises(ExportError, match="torch.jit.script failed.*tracing"):
        _run(["--config-file", config, "--format", "torchscript", "--export-method", "scripting",
              "--output", tmp_path, "--input-size", "64", "64"])


def test_bad_arguments_are_usage_errors(tiny_model_dir, tmp_path):
    config, _ = tiny_model_dir["semantic"]
    with pytest.raises(export_tool.UsageError, match="no such file"):
        _run(["--config-file", tmp_path / "nope.yaml", "--output", tmp_path])
    with pytest.raises(export_tool.UsageError, match="not both"):
        _run(["--config-file", config, "--output", tmp_path, "--sample-image", config,
              "--input-size", "64", "64"])
    with pytest.raises(FileNotFoundError, match="export.json"):
        load_exported(str(tmp_path))
