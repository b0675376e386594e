"""tools/benchmark_icnet.py on a small input: the parts cover the model's FLOPs."""
import json
import os

import pytest

from .conftest import REPO_ROOT, SMALL, TOY_CONFIGS, load_benchmark_icnet

benchmark_icnet = load_benchmark_icnet()


def _run(variant, *extra):
    return benchmark_icnet.main([
        "--config-file", TOY_CONFIGS[variant], "--input-size", "64", "96",
        "--warmup", "0", "--iters", "1", *extra, *SMALL,
    ])


def test_branch_breakdown(tmp_path, capsys):
    out = tmp_path / "branches.json"
    report = _run("image", "--output", str(out))
    stdout = capsys.readouterr().out
    rows = {row["part"]: row for row in report["parts"]}
    assert list(rows) == ["low", "medium", "high", "fusion", "rest", "model"]
    assert report["low_branch_input"] == "image"
    for part in ("low", "medium", "high", "fusion"):
        assert rows[part]["gflops"] > 0 and rows[part]["latency_ms_median"] > 0
        assert f"| {part} |" in stdout
    # Everything but normalization / padding / resizing is inside a part.
    assert 0 <= rows["rest"]["gflops"] < 0.01 * rows["model"]["gflops"]
    assert json.loads(out.read_text())["parts"] == report["parts"]


def test_feature_variant_times_its_parts():
    report = _run("feature", "--no-flops")
    rows = {row["part"]: row for row in report["parts"]}
    assert report["low_branch_input"] == "feature"
    assert all(rows[p]["latency_ms_median"] > 0 for p in ("low", "medium", "high", "fusion", "model"))
    assert rows["model"]["gflops"] is None


def test_rejects_a_non_icnet_config():
    fpn = os.path.join(REPO_ROOT, "configs", "baselines", "toy", "semantic_fpn_R18_toy.yaml")
    with pytest.raises(SystemExit, match="not an ICNet config"):
        benchmark_icnet.main(["--config-file", fpn, "--input-size", "64", "64", "--iters", "1"])
