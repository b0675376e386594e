"""tools/summarize_runs.py: mean ± std over seeds from training folders (metrics.json)
and from --eval-only folders (eval_results.json written by train_net.py)."""
import json

import pytest

import train_net
from d2ext.config import get_cfg
from tests.tools.conftest import load_tool

summarize_runs = load_tool("summarize_runs")


def fake_training_run(run_dir, pq, finished=True):
    """A folder as detectron2's trainer leaves it: loss records, then the evaluation record."""
    run_dir.mkdir(parents=True)
    with open(run_dir / "metrics.json", "w") as f:
        f.write(json.dumps({"iteration": 19, "total_loss": 3.0, "data_time": 0.1}) + "\n")
        f.write(json.dumps({"iteration": 999, "panoptic_seg/PQ": pq, "segm/AP": pq / 2}) + "\n")
    if finished:
        (run_dir / "model_final.pth").write_bytes(b"")
    return str(run_dir)


def test_mean_and_std_over_training_runs(tmp_path, capsys):
    runs = [fake_training_run(tmp_path / f"seed_{s}", pq) for s, pq in enumerate([50.0, 52.0, 54.0])]
    table = summarize_runs.summarize(runs, ["panoptic_seg/PQ", "segm/AP", "sem_seg/mIoU"])
    assert table == {"panoptic_seg/PQ": [50.0, 52.0, 54.0], "segm/AP": [25.0, 26.0, 27.0]}
    summarize_runs.main(runs + ["--metrics", "panoptic_seg/PQ"])
    assert "| 52.0 ± 2.0 |" in capsys.readouterr().out


def test_eval_only_folder_written_by_train_net(tmp_path):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path / "eval_0000499")
    cfg.MODEL.WEIGHTS = "output/x/model_0000499.pth"
    results = {"panoptic_seg": {"PQ": 48.25, "PQ_th": 16.5}, "sem_seg": {"mIoU": 61.0}}
    path = train_net.write_eval_results(cfg, results)
    with open(path) as f:
        assert json.load(f)["weights"] == "output/x/model_0000499.pth"
    got = summarize_runs.final_metrics(cfg.OUTPUT_DIR)
    assert got == {"panoptic_seg/PQ": 48.25, "panoptic_seg/PQ_th": 16.5, "sem_seg/mIoU": 61.0}


def test_missing_and_unfinished_runs_are_errors(tmp_path):
    with pytest.raises(SystemExit, match="neither metrics.json nor eval_results.json"):
        summarize_runs.final_metrics(str(tmp_path / "never_started"))
    unfinished = fake_training_run(tmp_path / "seed_0", 50.0, finished=False)
    with pytest.raises(SystemExit, match="unfinished"):
        summarize_runs.final_metrics(unfinished)
