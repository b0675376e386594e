"""tools/benchmark.py --backend onnxruntime: the exported model timed beside eager, in one run."""
import pytest

from .conftest import load_tool

benchmark = load_tool("benchmark")


@pytest.mark.parametrize("kind", ["semantic", "instance"])
def test_onnxruntime_rows_beside_eager(kind, tiny_model_dir, tmp_path, capsys):
    config, weights = tiny_model_dir[kind]
    report = benchmark.main([
        "--config-file", config, "--backend", "onnxruntime", "--input-size", "64", "64",
        "--warmup", "0", "--iters", "2", "--threads", "1", "--no-flops",
        "--output", str(tmp_path / "b.json"), "MODEL.WEIGHTS", weights,
    ])
    roles = [r["role"] for r in report["results"]]
    assert roles == ["config", "config_onnxruntime"]
    assert [r["backend"] for r in report["results"]] == ["pytorch", "onnxruntime"]
    assert report["results"][1]["latency_ms_median"] > 0 and len(report["results"][1]["latency_ms_all"]) == 2
    ratio = report["ratio_onnxruntime"]["config"]
    assert ratio == pytest.approx(report["results"][1]["latency_ms_median"] / report["results"][0]["latency_ms_median"])
    assert "[onnxruntime]" in capsys.readouterr().out


def test_onnxruntime_backend_needs_single_image_inference(tiny_model_dir):
    config, _ = tiny_model_dir["semantic"]
    for extra in (["--task", "train"], ["--batch-size", "2"], ["--amp"]):
        with pytest.raises(benchmark.UsageError, match="--backend onnxruntime"):
            benchmark.main(["--config-file", config, "--backend", "onnxruntime", *extra])
