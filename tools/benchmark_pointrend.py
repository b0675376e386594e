#!/usr/bin/env python
"""FLOPs and latency of PointRend's subdivision versus dense heads, for 224 x 224 masks.

    python tools/benchmark_pointrend.py [--config-file CFG] [--boxes R] [--image-size H W]
        [--warmup N] [--iters N] [--threads N] [--output results.json] [KEY VALUE ...]

Three ways to get a 224 x 224 mask logit map for each of R boxes, from the same
random p2 features of an H x W image (default 800 x 1333, COCO R50-FPN channels):

- ``subdivision``: PointRendMaskHead inference as configured (coarse 7 x 7 head,
  then SUBDIVISION_STEPS x (upsample x2, point head on the SUBDIVISION_NUM_POINTS
  most uncertain cells)): 196 + 4 x 784 = 3332 point evaluations per box by default.
- ``dense_point_head``: the same coarse head and point head, the point head run on
  every one of the 224 x 224 = 50176 cell centres (the same MLP, no selection).
- ``dense_conv_head``: Mask R-CNN's standard mask head (NUM_CONV 3 x 3 convs of
  CONV_DIM=256 + deconvolution) on 112 x 112 box features -> 224 x 224 masks, the
  dense head the paper compares against; its box-feature pooling is not counted.

FLOPs: fvcore's count (one multiply-add = one flop, as in d2ext.benchmark); ops
without an fvcore formula (top-k, scatter, abs of the selection) count zero and are
listed per variant in the json. Latency: median of interleaved runs on the CPU (or
--device cuda), under torch.no_grad(). Prints a Markdown table; --output writes json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from typing import Any, Dict, List, Optional, Sequence

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration; needs `make setup`)

import torch  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from d2ext.benchmark import count_flops, environment, measure_interleaved  # noqa: E402
from d2ext.layers import point_sample  # noqa: E402
from d2ext.engine import load_cfg  # noqa: E402

from d2ext_projects.pointrend import PointRendMaskHead  # noqa: E402
from d2ext_projects.pointrend.mask_head import _select  # noqa: E402
from d2ext_projects.pointrend.point_features import regular_grid_coords  # noqa: E402

DEFAULT_CONFIG = "configs/pointrend/coco/pointrend_rcnn_R_50_FPN_1x_coco.yaml"
logger = logging.getLogger("d2ext.benchmark_pointrend")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    p.add_argument("--boxes", type=int, default=10, help="boxes per call (default 10)")
    p.add_argument("--image-size", type=int, nargs=2, default=(800, 1333), metavar=("H", "W"))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--output", default=None, metavar="JSON")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return p


class Setup:
    """The heads and their inputs: random p2 features, R random boxes of random classes."""

    def __init__(self, cfg, num_boxes: int, image_size: Sequence[int], device: str):
        torch.manual_seed(0)
        channels = cfg.MODEL.FPN.OUT_CHANNELS
        shapes = {f: ShapeSpec(channels=channels, stride=4) for f in ("p2",)}
        self.head = PointRendMaskHead(cfg, shapes).to(device).eval()
        self.side = self.head.output_side()
        h, w = (-(-s // 32) * 32 for s in image_size)  # padded like the backbone's input
        self.features = {"p2": torch.randn(1, channels, h // 4, w // 4, device=device)}
        xy0 = torch.rand(num_boxes, 2, device=device) * torch.tensor([w * 0.6, h * 0.6], device=device)
        wh = (torch.rand(num_boxes, 2, device=device) * 0.3 + 0.1) * torch.tensor([w, h], device=device)
        self.boxes = torch.cat([xy0, xy0 + wh], dim=1)
        self.classes = torch.randint(0, cfg.MODEL.ROI_HEADS.NUM_CLASSES, (num_boxes,), device=device)
        self.image_size = (h, w)

        dense_cfg = cfg.clone()
        dense_cfg.defrost()
        dense_cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
        dense_cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
        side_in = self.side // 2  # the deconvolution doubles it
        self.conv_head = MaskRCNNConvUpsampleHead(
            dense_cfg, ShapeSpec(channels=channels, height=side_in, width=side_in)
        ).to(device).eval()
        self.box_features = torch.randn(num_boxes, channels, side_in, side_in, device=device)

    def instances(self) -> List[Instances]:
        inst = Instances(self.image_size)
        inst.pred_boxes = Boxes(self.boxes)
        inst.pred_classes = self.classes
        return [inst]

    def subdivision(self) -> torch.Tensor:
        return self.head(self.features, self.instances())[0].pred_masks

    def dense_point_head(self) -> torch.Tensor:
        head, r = self.head, len(self.boxes)
        coarse = head.coarse_head.layers(head.box_features(self.features, [self.boxes]))
        coords = regular_grid_coords(self.side, r, self.boxes.device)
        fine = head.point_features(self.features, [self.boxes], coords)
        logits = _select(head.point_head(fine, point_sample(coarse, coords)), self.classes)
        return logits.reshape(r, 1, self.side, self.side).sigmoid()

    def dense_conv_head(self) -> torch.Tensor:
        return _select(self.conv_head.layers(self.box_features), self.classes).sigmoid()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_cfg(args.config_file, args.opts)
    s = Setup(cfg, args.boxes, args.image_size, args.device)
    fns = {"subdivision": s.subdivision, "dense_point_head": s.dense_point_head, "dense_conv_head": s.dense_conv_head}
    modules = {
        "subdivision": [s.head],
        "dense_point_head": [s.head],
        "dense_conv_head": [s.conv_head],
    }
    with torch.no_grad():
        shapes = {name: tuple(fn().shape) for name, fn in fns.items()}
        flops = {name: count_flops(fn, (), modules=modules[name]) for name, fn in fns.items()}
        timings = measure_interleaved(fns, warmup=args.warmup, iters=args.iters, device=args.device)

    # Point evaluations per box: what the subdivision computes vs every cell.
    steps, budget = s.head.subdivision_steps, s.head.subdivision_num_points
    side0 = s.head.coarse_head.output_side_resolution
    points = sum(min(budget, (side0 * 2 ** (i + 1)) ** 2) for i in range(steps))
    rows = []
    for name in fns:
        g = flops[name]["gflops"]
        rows.append({
            "variant": name,
            "output_shape": shapes[name],
            "gflops_total": g,
            "gflops_per_box": g / args.boxes,
            "latency_ms_median": timings[name]["latency_ms_median"],
            "latency_ms_per_box": timings[name]["latency_ms_median"] / args.boxes,
            "flops_unsupported_ops": flops[name]["unsupported_ops"],
            "latency_ms_all": timings[name]["latency_ms_all"],
        })
    base = rows[0]
    lines = [
        f"224x224 masks, {args.boxes} boxes, p2 of a {s.image_size[0]}x{s.image_size[1]} input, "
        f"{args.device}; subdivision: {points} point evaluations per box vs {s.side ** 2} dense",
        "| variant | GFLOPs / box | x subdivision | latency ms / box (median) | x subdivision |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['gflops_per_box']:.3f} | {r['gflops_total'] / base['gflops_total']:.1f} | "
            f"{r['latency_ms_per_box']:.2f} | {r['latency_ms_median'] / base['latency_ms_median']:.1f} |"
        )
    print("\n".join(lines))
    out = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "config_file": args.config_file,
        "boxes": args.boxes,
        "image_size": list(s.image_size),
        "point_evaluations_per_box": {"subdivision": points, "dense": s.side ** 2},
        "environment": environment(args.device),
        "results": rows,
        "markdown": lines,
    }
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
