#!/usr/bin/env python
"""Where ICNet's inference time goes: FLOPs and latency of each branch and of the fusion.

    python tools/benchmark_icnet.py --config-file configs/icnet/cityscapes/icnet_R18_cityscapes.yaml \\
        [--input-size 1024 2048] [--warmup N] [--iters N] [--threads N] [--device cpu|cuda] \\
        [--fold-bn] [--output results.json] [KEY VALUE ...]

One random image of ``--input-size`` goes through the model as
``tools/benchmark.py --task inference`` sends it (batch 1, eval mode, no
gradients). Its intermediate tensors are computed once; then each part is
timed on them, the parts and the whole model interleaved
(``d2ext.benchmark.measure_interleaved``) so that a busy period of the machine
slows all alike:

- low: the low-resolution branch from its input (the 1/4 image through the
  dilated ResNet, or with ``LOW_BRANCH_INPUT: feature`` the medium branch's res3
  downsampled; then pyramid pooling);
- medium: stem .. res3 on the 1/2 image;
- high: the three stride-2 convolutions on the full image;
- fusion: both CFF units, the classifier and the upsampling to the input size;
- rest: the whole model minus the four parts (normalization, padding, the image
  pyramid, cropping / resizing the output to the image size); latency and
  FLOPs, by difference;
- model: the whole ``model(batch)``.

FLOPs are fvcore's (one multiply-add = one flop), as in tools/benchmark.py.
Prints a Markdown table; ``--output`` writes it with the numbers as json.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration; needs `make setup`)

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.structures import ImageList  # noqa: E402

from d2ext.tool_logging import setup_tool_logging as setup_logging  # noqa: E402
from d2ext.benchmark import (  # noqa: E402
    count_flops,
    environment,
    measure_interleaved,
    synthetic_inputs,
)
from d2ext.layers import fold_batch_norms  # noqa: E402
from d2ext_projects.icnet import ICNetBackbone, ICNetHead  # noqa: E402

logger = logging.getLogger("d2ext.benchmark_icnet")

PARTS = ("low", "medium", "high", "fusion")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input-size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--fold-bn", action="store_true",
                        help="fold batch norms into convolutions first (as tools/benchmark.py --fold-bn)")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--output", default=None, metavar="JSON", help="write results here")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides (KEY VALUE pairs)")
    return parser


def build_icnet(config_file: str, opts: Sequence[str], device: str) -> Tuple[Any, torch.nn.Module]:
    """The frozen config and the eval-mode model; fails unless the model is ICNet."""
    from d2ext.engine import Trainer, load_cfg

    cfg = load_cfg(config_file, list(opts) + ["MODEL.DEVICE", device])
    cfg.freeze()
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    model = Trainer.build_model(cfg)
    if not (isinstance(getattr(model, "backbone", None), ICNetBackbone)
            and isinstance(getattr(model, "sem_seg_head", None), ICNetHead)):
        raise SystemExit(f"{config_file}: not an ICNet config (ICNetBackbone + ICNetHead)")
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    return cfg, model.eval()


def part_callables(model: torch.nn.Module, batch: List[Dict[str, Any]]) -> Dict[str, Tuple[Callable, tuple]]:
    """name -> (callable, its inputs) for each part and the whole model; the
    inputs of each part are computed here, once, as the model computes them."""
    backbone, head = model.backbone, model.sem_seg_head
    with torch.no_grad():
        images = [(x["image"].to(model.device) - model.pixel_mean) / model.pixel_std for x in batch]
        image = ImageList.from_tensors(images, backbone.size_divisibility).tensor
        half = backbone.downsample(image)
        medium = backbone.forward_medium(half)
        low_input = backbone.downsample(half) if backbone.low_branch_input == "image" else medium
        features = {
            "low": backbone.forward_low(low_input),
            "medium": medium,
            "high": backbone.forward_high(image),
        }
    return {
        "low": (backbone.forward_low, (low_input,)),
        "medium": (backbone.forward_medium, (half,)),
        "high": (backbone.forward_high, (image,)),
        "fusion": (head, (features,)),
        "model": (model, (batch,)),
    }


def run(args) -> Dict[str, Any]:
    cfg, model = build_icnet(args.config_file, args.opts, args.device)
    if args.fold_bn:
        logger.info("Folded %d batch norms into convolutions", fold_batch_norms(model))
    batch = synthetic_inputs(1, *args.input_size, seed=0)
    calls = part_callables(model, batch)

    def bind(fn, inputs):
        def call():
            with torch.no_grad():
                return fn(*inputs)
        return call

    logger.info("Timing %s: %d warm-up + %d timed rounds, interleaved",
                ", ".join(calls), args.warmup, args.iters)
    stats = measure_interleaved(
        {name: bind(fn, inputs) for name, (fn, inputs) in calls.items()},
        args.warmup, args.iters, args.device, track_memory=False,
    )
    latency = {name: s["latency_ms_median"] for name, s in stats.items()}
    latency["rest"] = latency["model"] - sum(latency[p] for p in PARTS)

    gflops: Optional[Dict[str, float]] = None
    unsupported: Dict[str, Dict[str, int]] = {}
    if not args.no_flops:
        gflops = {}
        for name, (fn, inputs) in calls.items():
            counted = count_flops(fn, inputs)
            gflops[name] = counted["gflops"]
            unsupported[name] = counted["unsupported_ops"]
        gflops["rest"] = gflops["model"] - sum(gflops[p] for p in PARTS)

    rows = []
    for name in PARTS + ("rest", "model"):
        rows.append({
            "part": name,
            "latency_ms_median": latency[name],
            "latency_share": latency[name] / latency["model"],
            "latency_ms_all": stats[name]["latency_ms_all"] if name in stats else None,
            "gflops": None if gflops is None else gflops[name],
            "gflops_share": None if gflops is None else gflops[name] / gflops["model"],
            "flops_unsupported_ops": unsupported.get(name),
        })
    return {
        "config_file": args.config_file,
        "low_branch_input": cfg.MODEL.ICNET.LOW_BRANCH_INPUT,
        "ppm_mode": cfg.MODEL.ICNET.PPM_MODE,
        "resnet_depth": cfg.MODEL.RESNETS.DEPTH,
        "input_size": list(args.input_size),
        "device": args.device,
        "warmup": args.warmup,
        "iters": args.iters,
        "parts": rows,
    }


def markdown(report: Dict[str, Any]) -> List[str]:
    lines = [
        f"ICNet R{report['resnet_depth']} ({report['low_branch_input']} cascade, PPM "
        f"{report['ppm_mode']}), {'x'.join(map(str, report['input_size']))}, batch 1, "
        f"{report['device']}, median of {report['iters']}",
        "",
        "| part | latency ms (median) | share of latency | GFLOPs | share of FLOPs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in report["parts"]:
        flops = "-" if row["gflops"] is None else f"{row['gflops']:.2f}"
        flops_share = "-" if row["gflops_share"] is None else f"{100 * row['gflops_share']:.1f}%"
        lines.append(
            f"| {row['part']} | {row['latency_ms_median']:.1f} | "
            f"{100 * row['latency_share']:.1f}% | {flops} | {flops_share} |"
        )
    return lines


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.iters < 1 or args.warmup < 0:
        get_parser().error("--iters must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        get_parser().error("--device cuda, but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)

    report = run(args)
    report["command"] = shlex.join(["python", "tools/benchmark_icnet.py", *argv])
    report["environment"] = environment(args.device)
    report["markdown"] = markdown(report)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        logger.info("Wrote %s", args.output)
    print("\n".join(report["markdown"]), flush=True)
    return report


if __name__ == "__main__":
    main()
