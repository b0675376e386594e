#!/usr/bin/env python
"""Summarize finished train_net.py runs as one Markdown row per config: mean ± std over seeds.

    python tools/summarize_runs.py output/baselines/mask_rcnn_R18_FPN_toy/seed_* [--metrics segm/AP segm/AP75]

A training run's folder holds detectron2's metrics.json; its evaluation results
are the last record that carries them. An evaluation-only folder (train_net.py
--eval-only, e.g. of an intermediate checkpoint) holds eval_results.json
instead. A missing or unfinished run is an error.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Dict, List

DEFAULT_METRICS = ["segm/AP", "segm/AP75", "bbox/AP", "sem_seg/mIoU", "panoptic_seg/PQ"]


def final_metrics(run_dir: str) -> Dict[str, float]:
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path):
        eval_only = os.path.join(run_dir, "eval_results.json")  # written by train_net.write_eval_results
        if not os.path.exists(eval_only):
            raise SystemExit(f"{run_dir}: neither metrics.json nor eval_results.json (did the run start?)")
        with open(eval_only) as f:
            return json.load(f)["results"]
    found: Dict[str, float] = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            found.update({k: v for k, v in record.items() if "/" in k and not k.startswith(("data_time", "time"))})
    if not os.path.exists(os.path.join(run_dir, "model_final.pth")):
        raise SystemExit(f"{run_dir}: no model_final.pth (unfinished run)")
    return found


def summarize(run_dirs: List[str], metrics: List[str]) -> Dict[str, List[float]]:
    values: Dict[str, List[float]] = {m: [] for m in metrics}
    for run in run_dirs:
        got = final_metrics(run)
        for m in metrics:
            if m in got:
                values[m].append(got[m])
    return {m: v for m, v in values.items() if v}


def format_cell(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (OUTPUT_DIR of train_net.py), one per seed")
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS)
    args = parser.parse_args(argv)
    table = summarize(args.runs, args.metrics)
    if not table:
        sys.exit(f"none of {args.metrics} found in {args.runs}")
    print(f"runs: {len(args.runs)}")
    print("| " + " | ".join(table) + " |")
    print("|" + " --- |" * len(table))
    print("| " + " | ".join(format_cell(v) for v in table.values()) + " |")


if __name__ == "__main__":
    main()
