#!/usr/bin/env python
"""FLOPs and latency of PointRend's subdivision versus dense heads, for 224 x 224 masks.

    python tools/benchmark_pointrend.py [--mode variants|mask_rcnn] [--config-file CFG]
        [--boxes R] [--image-size H W] [--warmup N] [--iters N] [--threads N]
        [--output results.json] [KEY VALUE ...]

Mode ``variants`` (the default) compares three ways to get a 224 x 224 mask logit map
for each of R boxes, from the same random p2 features of an H x W image (default
800 x 1333, COCO R50-FPN channels):

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

Mode ``mask_rcnn`` (``--mode mask_rcnn``): the mask heads' inference on given boxes,
what ROI heads' ``forward_with_given_boxes`` calls, on R (default 100) seeded random
boxes of random classes over random p2..p5 features of an H x W image (default
800 x 1216): d2ext's PointRendMaskHead (from --config-file, 224 x 224 masks) against
detectron2's Mask R-CNN mask head (ROIAlign pooling + MaskRCNNConvUpsampleHead, 28 x 28
masks) of the model zoo's COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml, both
random-init, timed interleaved in the same run. The ratio of the medians
(PointRend / Mask R-CNN) is the in-tree measure: machine load largely cancels in it
(not entirely: on a loaded machine, rerun before quoting one run).
detectron2's own PointRend head measured 8.9x (1 thread) and 9.5x (2 threads) on
these inputs.
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
from detectron2 import model_zoo  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling import build_roi_heads  # noqa: E402
from detectron2.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from d2ext.benchmark import count_flops, environment, measure_interleaved  # noqa: E402
from d2ext.config import get_cfg  # noqa: E402
from d2ext.layers import point_sample  # noqa: E402
from d2ext.engine import load_cfg  # noqa: E402

from d2ext_projects.pointrend import PointRendMaskHead  # noqa: E402
from d2ext_projects.pointrend.mask_head import _select  # noqa: E402
from d2ext_projects.pointrend.point_features import regular_grid_coords  # noqa: E402

DEFAULT_CONFIG = "configs/pointrend/coco/pointrend_rcnn_R_50_FPN_1x_coco.yaml"
MASK_RCNN_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
MODES = ("variants", "mask_rcnn")
MODE_DEFAULTS = {"variants": (10, (800, 1333)), "mask_rcnn": (100, (800, 1216))}
logger = logging.getLogger("d2ext.benchmark_pointrend")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=MODES, default="variants",
                   help="variants: subdivision vs dense heads; mask_rcnn: PointRend's mask head "
                        "vs Mask R-CNN's on the same boxes")
    p.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="FILE")
    p.add_argument("--mask-rcnn-config", default=MASK_RCNN_CONFIG, metavar="ZOO_FILE",
                   help="model-zoo config of the Mask R-CNN head (--mode mask_rcnn)")
    p.add_argument("--boxes", type=int, default=None,
                   help="boxes per call (default 10; 100 with --mode mask_rcnn)")
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="default 800 1333 (800 1216 with --mode mask_rcnn)")
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


class MaskHeadsSetup:
    """PointRend's and Mask R-CNN's mask heads (inside their ROI heads) on the same inputs:
    random p2..p5 of one H x W image, R random boxes (seeded) of random classes."""

    LEVELS = ("p2", "p3", "p4", "p5")

    def __init__(self, cfg, mask_rcnn_cfg, num_boxes: int, image_size: Sequence[int], device: str):
        torch.manual_seed(0)
        h, w = (-(-s // 32) * 32 for s in image_size)  # padded like the backbone's input
        self.image_size = (h, w)
        channels = cfg.MODEL.FPN.OUT_CHANNELS
        strides = {f: 2 ** int(f[1:]) for f in self.LEVELS}
        shapes = {f: ShapeSpec(channels=channels, stride=s) for f, s in strides.items()}
        self.pointrend = build_roi_heads(cfg, shapes).to(device).eval()
        self.mask_rcnn = build_roi_heads(mask_rcnn_cfg, shapes).to(device).eval()
        self.features = {
            f: torch.randn(1, channels, h // s, w // s, device=device) for f, s in strides.items()
        }
        xy0 = torch.rand(num_boxes, 2, device=device) * torch.tensor([w * 0.6, h * 0.6], device=device)
        wh = (torch.rand(num_boxes, 2, device=device) * 0.3 + 0.1) * torch.tensor([w, h], device=device)
        self.boxes = torch.cat([xy0, xy0 + wh], dim=1)
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        self.classes = torch.randint(0, num_classes, (num_boxes,), device=device)

    def instances(self) -> List[Instances]:
        inst = Instances(self.image_size)
        inst.pred_boxes = Boxes(self.boxes)
        inst.pred_classes = self.classes
        return [inst]

    def pointrend_head(self) -> torch.Tensor:
        return self.pointrend.forward_with_given_boxes(self.features, self.instances())[0].pred_masks

    def mask_rcnn_head(self) -> torch.Tensor:
        return self.mask_rcnn.forward_with_given_boxes(self.features, self.instances())[0].pred_masks


def mask_rcnn_cfg(zoo_file: str, num_classes: int, device: str):
    """The model zoo's Mask R-CNN config (random init) with the PointRend model's class count."""
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(zoo_file))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    return cfg


def main_mask_rcnn(args, cfg) -> Dict[str, Any]:
    """--mode mask_rcnn: PointRend's mask head / Mask R-CNN's, medians of interleaved runs."""
    mcfg = mask_rcnn_cfg(args.mask_rcnn_config, cfg.MODEL.ROI_HEADS.NUM_CLASSES, args.device)
    s = MaskHeadsSetup(cfg, mcfg, args.boxes, args.image_size, args.device)
    fns = {"pointrend": s.pointrend_head, "mask_rcnn": s.mask_rcnn_head}
    with torch.no_grad():
        shapes = {name: tuple(fn().shape) for name, fn in fns.items()}
        timings = measure_interleaved(fns, warmup=args.warmup, iters=args.iters, device=args.device)
    med = {name: timings[name]["latency_ms_median"] for name in fns}
    ratio = med["pointrend"] / med["mask_rcnn"]
    threads = torch.get_num_threads()
    lines = [
        f"mask heads on {args.boxes} given boxes, p2..p5 of a {s.image_size[0]}x{s.image_size[1]} "
        f"input, {args.device}, {threads} thread(s), {args.iters} interleaved iterations",
        "| head | config | mask | latency ms (median) | all runs (ms) |",
        "| --- | --- | --- | --- | --- |",
    ]
    configs = {"pointrend": args.config_file, "mask_rcnn": args.mask_rcnn_config}
    for name in fns:
        runs = ", ".join(f"{t:.0f}" for t in timings[name]["latency_ms_all"])
        lines.append(
            f"| {name} | {configs[name]} | {shapes[name][-2]}x{shapes[name][-1]} | {med[name]:.1f} | {runs} |"
        )
    lines.append(f"PointRend / Mask R-CNN mask head: {ratio:.2f}x")
    print("\n".join(lines))
    return {
        "mode": "mask_rcnn",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "config_file": args.config_file,
        "mask_rcnn_config": args.mask_rcnn_config,
        "boxes": args.boxes,
        "image_size": list(s.image_size),
        "threads": threads,
        "environment": environment(args.device),
        "results": [
            {"head": name, "config": configs[name], "output_shape": shapes[name],
             "latency_ms_median": med[name], "latency_ms_all": timings[name]["latency_ms_all"]}
            for name in fns
        ],
        "ratio_pointrend_to_mask_rcnn": ratio,
        "markdown": lines,
    }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    default_boxes, default_size = MODE_DEFAULTS[args.mode]
    args.boxes = default_boxes if args.boxes is None else args.boxes
    args.image_size = default_size if args.image_size is None else tuple(args.image_size)
    cfg = load_cfg(args.config_file, args.opts)
    if args.mode == "mask_rcnn":
        out = main_mask_rcnn(args, cfg)
        _write(out, args.output)
        return out
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
        "mode": "variants",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "config_file": args.config_file,
        "boxes": args.boxes,
        "image_size": list(s.image_size),
        "point_evaluations_per_box": {"subdivision": points, "dense": s.side ** 2},
        "environment": environment(args.device),
        "results": rows,
        "markdown": lines,
    }
    _write(out, args.output)
    return out


def _write(out: Dict[str, Any], path: Optional[str]) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
