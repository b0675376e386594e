#!/usr/bin/env python
"""Time of MaskFormer's Hungarian matcher for one batch.

    python tools/benchmark_maskformer.py [--images 8] [--queries 100] [--targets 50]
        [--mask-size 128 128] [--target-scale 1] [--classes 133] [--num-points 0]
        [--device cpu] [--warmup 3] [--iters 10] [--threads N] [--output results.json]

Random predictions ("pred_logits" (B, Q, K + 1), "pred_masks" (B, Q, h, w)) and
random targets (T masks per image of (h * s, w * s) pixels, s = --target-scale;
s = 4 is what training sees at stride 4) go through ``HungarianMatcher`` with
MaskFormer's weights (1, 20, 1). Three timings, interleaved (d2ext.benchmark):

- ``matcher``: the whole call, B cost matrices and B scipy assignments;
- ``costs``: the B (Q, T) cost matrices only (batched tensor operations);
- ``assignment``: ``linear_sum_assignment`` on B precomputed (Q, T) matrices.

Prints a Markdown table (median ms per batch and per image); --output writes json
with the command, the environment and every timing.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration; needs `make setup`)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from d2ext.benchmark import measure_interleaved, tool_report  # noqa: E402
from d2ext_projects.maskformer.matcher import HungarianMatcher  # noqa: E402


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8, help="B, images per batch")
    p.add_argument("--queries", type=int, default=100, help="Q")
    p.add_argument("--targets", type=int, default=50, help="T, ground-truth segments per image")
    p.add_argument("--mask-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"),
                   help="predicted mask size")
    p.add_argument("--target-scale", type=int, default=1,
                   help="target masks are this many times larger than predictions")
    p.add_argument("--classes", type=int, default=133, help="K (COCO panoptic: 133)")
    p.add_argument("--num-points", type=int, default=0, help="> 0: point-sampled mask costs")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, metavar="JSON")
    return p


def make_batch(args) -> Dict[str, Any]:
    g = torch.Generator().manual_seed(args.seed)
    b, q, t, k = args.images, args.queries, args.targets, args.classes
    h, w = args.mask_size
    s = args.target_scale
    outputs = {
        "pred_logits": torch.randn(b, q, k + 1, generator=g),
        "pred_masks": torch.randn(b, q, h, w, generator=g) * 3,
    }
    # Targets: random boxes, a few percent to a quarter of the image each.
    hh, ww = h * s, w * s
    size = (torch.rand(b, t, 2, generator=g) * 0.4 + 0.1) * torch.tensor([hh, ww])
    start = torch.rand(b, t, 2, generator=g) * (torch.tensor([hh, ww]) - size)
    ys = torch.arange(hh)[None, None, :, None]
    xs = torch.arange(ww)[None, None, None, :]
    y0, x0 = start[..., 0, None, None], start[..., 1, None, None]
    y1, x1 = y0 + size[..., 0, None, None], x0 + size[..., 1, None, None]
    masks = (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)  # (B, T, hh, ww)
    targets = [
        {"labels": torch.randint(0, k, (t,), generator=g), "masks": masks[i]} for i in range(b)
    ]
    dev = torch.device(args.device)
    outputs = {key: v.to(dev) for key, v in outputs.items()}
    targets = [{key: v.to(dev) for key, v in tgt.items()} for tgt in targets]
    return {"outputs": outputs, "targets": targets}


def run(args) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = make_batch(args)
    outputs, targets = batch["outputs"], batch["targets"]
    matcher = HungarianMatcher(1.0, 20.0, 1.0, num_points=args.num_points)
    logits, masks = outputs["pred_logits"], outputs["pred_masks"]

    def all_costs():  # the matcher's per-image cost matrices, without scipy
        with torch.no_grad():
            return [
                matcher.cost_matrix(logits[i], masks[i], t["labels"], t["masks"]).cpu()
                for i, t in enumerate(targets)
            ]

    costs = [c.numpy().astype(np.float64) for c in all_costs()]

    fns = {
        "matcher": lambda: matcher(outputs, targets),
        "costs": all_costs,
        "assignment": lambda: [linear_sum_assignment(c) for c in costs],
    }
    stats = measure_interleaved(fns, args.warmup, args.iters, args.device, items_per_call=args.images)
    return stats


def markdown(args, stats: Dict[str, Dict[str, Any]]) -> List[str]:
    h, w = args.mask_size
    s = args.target_scale
    lines = [
        "| part | images x queries x targets | masks (pred / target) | device "
        "| ms per batch (median) | ms per image |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, st in stats.items():
        ms = st["latency_ms_median"]
        lines.append(
            f"| {name} | {args.images} x {args.queries} x {args.targets} | {h}x{w} / {h * s}x{w * s}"
            f"{f' ({args.num_points} points)' if args.num_points else ''} | {args.device} "
            f"| {ms:.1f} | {ms / args.images:.2f} |"
        )
    return lines


def main(argv=None) -> Dict[str, Any]:
    args = get_parser().parse_args(argv)
    stats = run(args)
    lines = markdown(args, stats)
    print("\n".join(lines))
    tool_report("tools/benchmark_maskformer.py", sys.argv[1:] if argv is None else argv, args, stats, lines)
    return stats


if __name__ == "__main__":
    main()
