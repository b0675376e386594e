"""d2ext.benchmark primitives (deterministic, fake clock) and tools/benchmark.py on tiny models."""
import json

import pytest
import torch
from torch import nn

from d2ext.benchmark import (
    count_flops,
    count_parameters,
    environment,
    measure,
    measure_interleaved,
    synthetic_inputs,
)

from .conftest import load_tool

benchmark = load_tool("benchmark")


class FakeClock:
    """A clock that only moves when a fake workload says how long it took."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def workload(self, durations, log=None, name=None):
        durations = list(durations)

        def fn():
            if log is not None:
                log.append(name)
            self.now += durations.pop(0)

        return fn


# ---------------------------------------------------------------------------- measure


def test_measure_median_of_timed_calls_only():
    clock = FakeClock()
    # 2 warm-up calls (slow, must be ignored), then 5 timed calls.
    fn = clock.workload([9.0, 7.0, 0.3, 0.1, 0.2, 0.5, 0.4])
    stats = measure(fn, warmup=2, iters=5, timer=clock, items_per_call=4)
    assert stats["latency_ms_median"] == pytest.approx(300.0)
    assert stats["latency_ms_all"] == pytest.approx([300.0, 100.0, 200.0, 500.0, 400.0])
    assert stats["latency_ms_mean"] == pytest.approx(300.0)
    assert stats["latency_ms_min"] == pytest.approx(100.0)
    assert stats["latency_ms_max"] == pytest.approx(500.0)
    assert stats["iters"] == 5 and stats["warmup"] == 2
    assert stats["items_per_s"] == pytest.approx(4 / 0.3)


def test_measure_even_count_median_averages_middle_pair():
    clock = FakeClock()
    stats = measure(clock.workload([0.4, 0.1, 0.8, 0.2]), warmup=0, iters=4, timer=clock)
    assert stats["latency_ms_median"] == pytest.approx(300.0)


def test_measure_rejects_no_iterations():
    with pytest.raises(ValueError):
        measure(lambda: None, warmup=0, iters=0)


def test_interleaved_alternates_order_and_keeps_times_apart():
    clock = FakeClock()
    log = []
    fns = {
        "a": clock.workload([1.0, 0.01, 0.02, 0.03], log, "a"),
        "b": clock.workload([2.0, 0.10, 0.30, 0.20], log, "b"),
    }
    stats = measure_interleaved(
        fns, warmup=1, iters=3, timer=clock, items_per_call={"a": 1, "b": 2}
    )
    assert log == ["a", "b", "b", "a", "a", "b", "b", "a"]  # rotating order
    assert stats["a"]["latency_ms_all"] == pytest.approx([10.0, 20.0, 30.0])
    assert stats["b"]["latency_ms_all"] == pytest.approx([100.0, 300.0, 200.0])
    assert stats["a"]["latency_ms_median"] == pytest.approx(20.0)
    assert stats["b"]["latency_ms_median"] == pytest.approx(200.0)
    assert stats["b"]["items_per_s"] == pytest.approx(2 / 0.2)


def test_measure_reports_cpu_peak_memory():
    stats = measure(lambda: torch.zeros(1000), warmup=0, iters=2)
    assert stats["peak_memory_kind"] == "cpu_peak_rss_vmhwm"
    assert stats["peak_memory_mb"] is None or stats["peak_memory_mb"] > 0


def test_measure_on_cuda_synchronizes_around_each_call(monkeypatch):
    """The CUDA branch, checked with fakes so that it runs on CPU-only machines too."""
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(
        torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset")
    )
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    clock = FakeClock()
    work = clock.workload([0.5, 0.25])

    def fn():
        events.append("call")
        work()

    stats = measure(fn, warmup=1, iters=1, device="cuda", timer=clock)
    assert events == ["sync", "call", "sync", "reset", "sync", "call", "sync"]
    assert stats["latency_ms_median"] == pytest.approx(250.0)
    assert stats["peak_memory_mb"] == 3.0
    assert stats["peak_memory_kind"] == "cuda_max_memory_allocated"


# ---------------------------------------------------------------------------- FLOPs, params


def test_count_flops_counts_convolution_multiply_adds():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.rand(1, 3, 16, 16)
    macs = 16 * 16 * (8 * 3 * 9 + 4 * 8)
    out = count_flops(conv, (x,))
    assert out["gflops"] == pytest.approx(macs / 1e9)
    assert out["by_module"]["0"] == pytest.approx(16 * 16 * 8 * 27 / 1e9)
    assert out["unsupported_ops"] == {}

    # A plain function: the modules it calls are named; skipped ops are listed.
    out = count_flops(lambda t: conv(t).sum(), x, modules=[conv])
    assert out["gflops"] == pytest.approx(macs / 1e9)
    assert out["unsupported_ops"] == {"aten::sum": 1}
    with pytest.raises(RuntimeError, match="modules="):
        count_flops(lambda t: conv(t), x)
    assert count_flops(conv.forward, x)["gflops"] == pytest.approx(macs / 1e9)


def test_count_flops_takes_detectron2_style_inputs():
    conv = nn.Conv2d(3, 2, 1)

    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, batched_inputs):
            return [
                {"out": self.conv(x["image"][None]), "size": x["height"]}
                for x in batched_inputs
            ]

    batch = [{"image": torch.rand(3, 5, 7), "height": 5, "width": 7, "file_name": "x.png"}]
    assert count_flops(DictModel(), (batch,))["gflops"] == pytest.approx(5 * 7 * 2 * 3 / 1e9)


def test_count_parameters_counts_shared_weights_once():
    a = nn.Linear(4, 3)
    model = nn.Sequential(a, nn.ReLU(), a)
    model[0].bias.requires_grad_(False)
    assert count_parameters(model) == {"params": 15, "params_trainable": 12}


def test_synthetic_inputs_shapes_and_targets():
    batch = synthetic_inputs(2, 20, 30, targets=["instances", "sem_seg"], num_classes=3,
                             num_sem_seg_classes=5, instances_per_image=4)
    assert len(batch) == 2
    item = batch[0]
    assert item["image"].shape == (3, 20, 30) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 255
    inst = item["instances"]
    assert len(inst) == 4 and inst.gt_masks.tensor.shape == (4, 20, 30)
    boxes = inst.gt_boxes.tensor
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 30).all() and (boxes[:, 3] <= 20).all()
    assert inst.gt_classes.max() < 3 and item["sem_seg"].max() < 5
    assert inst.gt_masks.tensor.flatten(1).any(dim=1).all()  # no empty mask
    with pytest.raises(ValueError, match="cannot synthesize"):
        synthetic_inputs(1, 8, 8, targets=["segments"])


def test_environment_names_versions_and_threads():
    env = environment("cpu")
    for key in ("torch", "detectron2", "device_name", "torch_num_threads", "python"):
        assert env[key], key


# ---------------------------------------------------------------------------- the tool


def _run(capsys, argv):
    report = benchmark.main(argv)
    return report, capsys.readouterr().out


def test_inference_json_and_markdown(tiny_model_dir, tmp_path, capsys):
    config_file, _ = tiny_model_dir["semantic"]
    out = tmp_path / "bench" / "results.json"
    argv = ["--config-file", config_file, "--task", "inference", "--device", "cpu",
            "--input-size", "64", "80", "--warmup", "1", "--iters", "2", "--output", str(out)]
    report, stdout = _run(capsys, argv)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["command"].startswith("python tools/benchmark.py --config-file")
    assert on_disk["argv"] == argv and on_disk["task"] == "inference"
    assert on_disk["environment"]["torch"] == torch.__version__
    (res,) = on_disk["results"]
    assert set(benchmark.RESULT_KEYS) <= set(res)
    assert res["latency_ms_median"] > 0 and len(res["latency_ms_all"]) == 2
    assert res["images_per_s"] == pytest.approx(1000 / res["latency_ms_median"])
    assert res["gflops"] > 0 and res["params"] > 1e6
    assert res["input_size"] == [64, 80] and res["batch_size"] == 1
    assert res["peak_memory_mb"] > 0

    lines = stdout.strip().splitlines()
    assert lines == report["markdown"]
    header = benchmark.MARKDOWN_HEADER.splitlines()
    assert lines[-3:-1] == header
    assert lines[-1].startswith("| tiny_semantic | inference | cpu | 64x80 | 1 | ")
    assert lines[-1].count("|") == header[0].count("|")


def test_compare_interleaves_two_settings_and_reports_ratio(tiny_model_dir, tmp_path, capsys):
    config_file, _ = tiny_model_dir["semantic"]
    report, stdout = _run(capsys, [
        "--config-file", config_file, "--compare", config_file,
        "--compare-opts", "MODEL.SEM_SEG_HEAD.CONVS_DIM 64",
        "--input-size", "64", "64", "--warmup", "0", "--iters", "2", "--no-flops",
    ])
    base, other = report["results"]
    assert (base["role"], other["role"]) == ("config", "compare")
    assert other["opts"] == ["MODEL.SEM_SEG_HEAD.CONVS_DIM", "64"]
    assert other["name"] == "tiny_semantic MODEL.SEM_SEG_HEAD.CONVS_DIM 64"
    assert other["params"] > base["params"]
    assert report["ratio"]["params"] == pytest.approx(other["params"] / base["params"])
    assert report["ratio"]["gflops"] is None  # --no-flops
    assert "ratio compare / config: latency_ms_median x" in stdout


def test_train_step_on_synthetic_batches(tiny_model_dir, capsys):
    config_file, _ = tiny_model_dir["instance"]
    report, stdout = _run(capsys, [
        "--config-file", config_file, "--task", "train", "--input-size", "64", "64",
        "--batch-size", "1", "--warmup", "1", "--iters", "1",
    ])
    (res,) = report["results"]
    assert res["task"] == "train" and res["batch_size"] == 1
    assert res["latency_ms_median"] > 0 and res["gflops"] is None
    assert "| tiny_instance | train | cpu | 64x64 | 1 |" in stdout


def test_bad_arguments_are_usage_errors(tiny_model_dir, tmp_path):
    config_file, _ = tiny_model_dir["semantic"]
    with pytest.raises(benchmark.UsageError, match="no such file"):
        benchmark.main(["--config-file", str(tmp_path / "nope.yaml")])
    with pytest.raises(benchmark.UsageError, match="--compare"):
        benchmark.main(["--config-file", config_file, "--compare-opts", "A 1"])
    if not torch.cuda.is_available():
        with pytest.raises(benchmark.UsageError, match="CUDA"):
            benchmark.main(["--config-file", config_file, "--device", "cuda"])


def test_markdown_row_shows_missing_numbers_as_dashes():
    res = {k: None for k in benchmark.RESULT_KEYS}
    res.update(name="x", task="data", device="cpu", batch_size=4, latency_ms_median=12.345,
               images_per_s=324.0)
    expected = "| x | data | cpu | loader | 4 | 12.35 | 324.00 | - | - | - |"
    assert benchmark.markdown_row(res) == expected


@pytest.fixture
def tiny_sem_seg_dataset(tmp_path):
    """A registered 4-image semantic dataset (removed again afterwards)."""
    import cv2
    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog

    rng = np.random.default_rng(0)
    dicts = []
    for i in range(4):
        image, label = tmp_path / f"img{i}.png", tmp_path / f"sem{i}.png"
        cv2.imwrite(str(image), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        cv2.imwrite(str(label), rng.integers(0, 4, (48, 64), dtype=np.uint8))
        dicts.append({"file_name": str(image), "sem_seg_file_name": str(label),
                      "height": 48, "width": 64, "image_id": i})
    name = "d2ext_test_benchmark_sem_seg"
    DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c", "d"], ignore_label=255,
                                  evaluator_type="sem_seg")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.mark.parametrize("task", ["data", "train"])
def test_loader_tasks(task, tiny_sem_seg_dataset, tiny_model_dir, capsys):
    config_file, _ = tiny_model_dir["semantic"]
    report, stdout = _run(capsys, [
        "--config-file", config_file, "--task", task, "--batch-size", "2",
        "--warmup", "1", "--iters", "2",
        "DATASETS.TRAIN", f"('{tiny_sem_seg_dataset}',)", "DATALOADER.NUM_WORKERS", "0",
    ])
    (res,) = report["results"]
    assert res["task"] == task and res["batch_size"] == 2 and res["input_size"] is None
    assert res["latency_ms_median"] > 0 and res["images_per_s"] > 0
    assert (res["params"] is None) == (task == "data")
    assert f"| tiny_semantic | {task} | cpu | loader | 2 |" in stdout


def test_amp_and_fold_bn_apply_to_every_model_timed(tiny_model_dir, capsys, monkeypatch):
    """--amp runs inference under autocast (bf16 on CPU); --fold-bn folds both models' batch norms."""
    config_file, _ = tiny_model_dir["semantic"]
    seen = []
    real_call = torch.nn.Module.__call__

    def record(self, *args, **kwargs):
        if type(self).__name__ == "SemanticSegmentor":
            seen.append(torch.is_autocast_enabled("cpu"))
        return real_call(self, *args, **kwargs)

    folded = []
    real_fold = benchmark.fold_batch_norms
    monkeypatch.setattr(benchmark, "fold_batch_norms", lambda m: folded.append(real_fold(m)) or folded[-1])
    monkeypatch.setattr(torch.nn.Module, "__call__", record)
    report, stdout = _run(capsys, [
        "--config-file", config_file, "--compare", config_file, "--amp", "--fold-bn",
        "--input-size", "64", "64", "--warmup", "0", "--iters", "1", "--no-flops",
    ])
    assert [r["precision"] for r in report["results"]] == ["bf16", "bf16"]
    assert seen and all(seen)
    assert len(folded) == 2 and folded[0] == folded[1] > 0  # both models, their ResNet's BNs
    with pytest.raises(benchmark.UsageError, match="--amp applies to --task inference"):
        benchmark.main(["--config-file", config_file, "--task", "train", "--amp"])
    with pytest.raises(benchmark.UsageError, match="--fold-bn applies to --task inference"):
        benchmark.main(["--config-file", config_file, "--task", "train", "--fold-bn"])


def test_test_images_feeds_the_datasets_images_in_turn(tiny_toy, tiny_model_dir, capsys, monkeypatch):
    config_file, _ = tiny_model_dir["instance"]
    seen = []
    original = benchmark._Run._test_images

    def recording(self, n):
        pool = original(self, n)
        seen.extend(batch[0]["file_name"] for batch in pool)
        return pool

    monkeypatch.setattr(benchmark._Run, "_test_images", recording)
    report, _ = _run(capsys, [
        "--config-file", config_file, "--test-images", "2", "--warmup", "0", "--iters", "3", "--no-flops",
        "DATASETS.TEST", "('toy_instances_val',)",
    ])
    (res,) = report["results"]
    assert len(seen) == 2 and seen[0] != seen[1]  # two different images of the val split
    assert len(res["latency_ms_all"]) == 3
    assert res["input_size"] == [64, 64]  # toy's 256 px resized to the tiny model's test size


def test_test_images_needs_inference_of_one_image(tiny_model_dir):
    config_file, _ = tiny_model_dir["instance"]
    with pytest.raises(benchmark.UsageError, match="--test-images"):
        benchmark.main(["--config-file", config_file, "--test-images", "2", "--input-size", "64", "64"])
    with pytest.raises(benchmark.UsageError, match="no DATASETS.TEST"):
        benchmark.main(["--config-file", config_file, "--test-images", "2", "--iters", "1", "--no-flops"])
