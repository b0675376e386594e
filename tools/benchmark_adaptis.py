#!/usr/bin/env python
"""Time of AdaptIS's greedy assembly per image versus the number of instances,
one candidate at a time versus batched.

    python tools/benchmark_adaptis.py [--config-file CFG] [--instances 1 5 10 25 50 100]
        [--candidates-per-instance 3] [--chunk-size 16] [--input-size 256 256]
        [--device cpu] [--warmup 1] [--iters 5] [--threads N] [--output results.json] [KEY VALUE ...]

A synthetic scene of N non-overlapping discs on a grid, with
``--candidates-per-instance`` candidate points inside each disc (the first at
its centre, the others within its radius), in a seeded random order, as a
proposal map's local maxima would come. Each candidate's mask costs one real
forward of the model's instance head (random weights, the config's head and
input size), and the decisions see the candidate's disc (the head's output is
replaced by it), so that exactly N masks are accepted and the other candidates
are skipped as covered. Two variants, interleaved (d2ext.benchmark):

- ``sequential``: ``greedy_assembly(chunk_size=1)``, the reference's loop: one
  head forward per uncovered candidate;
- ``batched``: ``chunk_size=--chunk-size``: the uncovered candidates' masks in
  chunks, one forward each; the same accepted instances (checked here).

The point-independent work (backbone, fusion, the head's per-image part) is
done once, before timing: it is the same for both. Prints a Markdown table
(median ms per image, head forwards, masks predicted); --output writes json
with the command, the environment and every timing.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Dict, List

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration; needs `make setup`)

import torch  # noqa: E402

from d2ext.benchmark import measure_interleaved, tool_report  # noqa: E402
from d2ext.engine import Trainer, load_cfg  # noqa: E402
from d2ext_projects.adaptis.assembly import greedy_assembly  # noqa: E402

DEFAULT_CONFIG = "configs/adaptis/toy/adaptis_R18_toy_panoptic_stage1.yaml"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--instances", type=int, nargs="+", default=[1, 5, 10, 25, 50, 100])
    p.add_argument("--candidates-per-instance", type=int, default=3)
    p.add_argument("--chunk-size", type=int, default=None, help="default: MODEL.ADAPTIS.TEST.CHUNK_SIZE")
    p.add_argument("--input-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, metavar="JSON")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def disc_scene(n: int, per: int, hw, seed: int):
    """-> candidates (n * per, 2) in a random order, their disc index (n * per,),
    disc centres (n, 2) and the common radius."""
    h, w = hw
    g = torch.Generator().manual_seed(seed)
    cols = math.ceil(math.sqrt(n * w / h))
    rows = math.ceil(n / cols)
    cell = min(h / rows, w / cols)
    radius = 0.4 * cell
    k = torch.arange(n)
    centres = torch.stack([(k % cols + 0.5) * cell, (k // cols + 0.5) * cell], dim=1)
    angle = torch.rand(n, per, generator=g) * 2 * math.pi
    dist = torch.rand(n, per, generator=g) * 0.6 * radius
    dist[:, 0] = 0
    offsets = torch.stack([angle.cos(), angle.sin()], dim=-1) * dist[..., None]
    points = (centres[:, None] + offsets).reshape(-1, 2)
    owner = k.repeat_interleave(per)
    order = torch.randperm(n * per, generator=g)
    return points[order], owner[order], centres, radius


def run(args) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device] + list(args.opts)
    cfg = load_cfg(args.config_file, opts)
    model = Trainer.build_model(cfg).eval()
    t = model.test_cfg
    chunk = args.chunk_size or t["chunk_size"]
    h, w = args.input_size
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(args.seed)) * 255
    inputs = [{"image": image}]
    with torch.no_grad():
        ctx = model.image_contexts(inputs, model.preprocess(inputs))[0]
    ys = torch.arange(h, device=model.device).float()[:, None] + 0.5
    xs = torch.arange(w, device=model.device).float()[None, :] + 0.5

    rows: List[Dict[str, Any]] = []
    for n in args.instances:
        points, owner, centres, radius = disc_scene(n, args.candidates_per_instance, (h, w), args.seed)
        points, owner, centres = points.to(model.device), owner.to(model.device), centres.to(model.device)
        owner_of = {tuple(p): int(o) for p, o in zip(points.tolist(), owner.tolist())}

        def predict(pts: torch.Tensor) -> torch.Tensor:
            ctx.predict(pts)  # the real cost: one head forward for the chunk
            c = centres[[owner_of[tuple(p)] for p in pts.tolist()]]
            d = ((ys[None] - c[:, 1, None, None]) ** 2 + (xs[None] - c[:, 0, None, None]) ** 2).sqrt()
            return torch.sigmoid((radius - d) * 2.0)

        def assemble(size: int):
            with torch.no_grad():
                return greedy_assembly(
                    points, predict, (h, w), mask_thresh=t["mask_thresh"], overlap_thresh=t["overlap_thresh"],
                    min_area=t["min_area"], chunk_size=size,
                )

        seq, bat = assemble(1), assemble(chunk)
        if seq.accepted != bat.accepted or len(seq.accepted) != n:
            raise RuntimeError(f"{n} instances: sequential accepted {len(seq.accepted)}, batched {len(bat.accepted)}")
        stats = measure_interleaved(
            {"sequential": lambda: assemble(1), "batched": lambda: assemble(chunk)},
            args.warmup, args.iters, args.device,
        )
        rows.append({
            "instances": n,
            "candidates": int(points.shape[0]),
            "chunk_size": chunk,
            "sequential": {**stats["sequential"], "forwards": seq.num_forwards, "masks": seq.num_predicted},
            "batched": {**stats["batched"], "forwards": bat.num_forwards, "masks": bat.num_predicted},
        })
    return {"rows": rows, "input_size": [h, w]}


def markdown(args, result: Dict[str, Any]) -> List[str]:
    h, w = result["input_size"]
    lines = [
        f"| instances | candidates | sequential ms (forwards) | batched ms (forwards, masks) | speed-up | input, device |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        s, b = r["sequential"], r["batched"]
        lines.append(
            f"| {r['instances']} | {r['candidates']} | {s['latency_ms_median']:.1f} ({s['forwards']}) "
            f"| {b['latency_ms_median']:.1f} ({b['forwards']}, {b['masks']}) "
            f"| {s['latency_ms_median'] / b['latency_ms_median']:.2f}x | {h}x{w}, {args.device}, chunk {r['chunk_size']} |"
        )
    return lines


def main(argv=None) -> Dict[str, Any]:
    args = get_parser().parse_args(argv)
    result = run(args)
    lines = markdown(args, result)
    print("\n".join(lines))
    tool_report("tools/benchmark_adaptis.py", sys.argv[1:] if argv is None else argv, args, result, lines)
    return result


if __name__ == "__main__":
    main()
