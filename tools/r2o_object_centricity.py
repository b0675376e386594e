#!/usr/bin/env python
"""Object-centricity of R2O's cluster masks: Hungarian-matched IoU with ground-truth segments.

    python tools/r2o_object_centricity.py --config-file configs/r2o/toy/r2o_R18_toy.yaml \\
        --weights output/r2o/r2o_R18_toy/model_0000999.pth [CKPT ...] --dataset toy_panoptic_val \\
        --k 8 [K ...] --num-images 100 --output out.json [--slic-only] [--seed 0] [-- KEY VALUE ...]

For each of the first --num-images images of a panoptic dataset: the model's
``predict_masks`` (K-means of the momentum encoder's superpixel embeddings,
k clusters per image, as training predicts them, in eval mode) -> one cluster
per pixel at the ground truth's resolution -> clusters matched one-to-one to
the image's segments by IoU (scipy's linear_sum_assignment); a segment scores
its cluster's IoU, 0 if unmatched. Reported: the mean over images of each
image's mean over segments, also over things only and stuff only.

Controls at the same k: ``--weights ""`` (random-init encoder), a BYOL
checkpoint with the BYOL config, and ``--slic-only`` (the same superpixels and
K-means on each superpixel's mean colour; no model). Several --weights (e.g.
every saved checkpoint of a run, to follow the IoU over training) and several
--k are scored on the same images, mapped (and SLIC'd) once.

Output: one summary line per (weights, k) on stdout and, with --output, a json:
the arguments and ``results``, one entry per (weights, k) with the checkpoint's
iteration, the summary (miou, miou_things, miou_stuff, counts) and the
per-image scores.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration)

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from d2ext.engine.setup import load_cfg  # noqa: E402
from d2ext.tool_logging import setup_tool_logging  # noqa: E402
from d2ext_projects.r2o.object_centricity import (  # noqa: E402
    format_summary,
    load_eval_inputs,
    score_object_centricity,
)

logger = logging.getLogger("d2ext.r2o_object_centricity")


def setup_logging() -> None:
    """The tools' logging, plus the R2O package's logger (the evaluation's progress)."""
    setup_tool_logging()
    setup_logger(name="d2ext_projects.r2o", abbrev_name="r2o")


def build_eval_model(cfg, weights: str):
    """The config's model in eval mode, with ``weights`` ("" = random init,
    reproducible from SEED); returns (model, the checkpoint's iteration or None)."""
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    model = build_model(cfg)
    if not hasattr(model, "predict_masks"):
        raise SystemExit(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} has no predict_masks(batched_inputs, k): "
            "use an R2O config (configs/r2o/...)"
        )
    iteration = None
    if weights:
        if not os.path.isfile(weights):
            raise SystemExit(f"--weights {weights}: no such file")
        extra = DetectionCheckpointer(model).load(weights)
        iteration = extra.get("iteration")
    model.eval()
    return model, iteration


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="an R2O config (its VIEWS and KMEANS settings are used)")
    parser.add_argument("--weights", nargs="+", default=[""],
                        help='R2O checkpoints, each scored; "" = random init (the default)')
    parser.add_argument("--slic-only", action="store_true",
                        help="cluster the superpixels' mean colours instead of encoder features (no model)")
    parser.add_argument("--dataset", default="toy_panoptic_val", help="a registered panoptic dataset")
    parser.add_argument("--k", type=int, nargs="+", default=[8], help="clusters per image (each scored)")
    parser.add_argument("--num-images", type=int, default=100, help="the first N images (<= 0: all)")
    parser.add_argument("--seed", type=int, default=0, help="of the K-means generator")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--log-period", type=int, default=20, help="log progress every N images")
    parser.add_argument("--output", default="", help="json file of the results")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides, KEY VALUE pairs; after '--' when they follow --weights or --k")
    args = parser.parse_args(argv)
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    if min(args.k) < 1:
        parser.error(f"--k must be >= 1, got {args.k}")
    if args.batch_size < 1 or args.log_period < 1:
        parser.error("--batch-size and --log-period must be >= 1")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging()
    cfg = load_cfg(args.config_file, args.opts)
    inputs = load_eval_inputs(cfg, args.dataset, args.num_images, args.log_period)
    kmeans_cfg = cfg.MODEL.R2O.KMEANS
    if args.slic_only and any(args.weights):
        logger.warning("--slic-only uses no model: --weights %s are ignored", args.weights)
    results = []
    for weights in [None] if args.slic_only else args.weights:
        if weights is None:
            model, iteration, mode, label = None, None, "slic", "SLIC alone"
        else:
            model, iteration = build_eval_model(cfg, weights)
            mode, label = ("model", weights) if weights else ("random_init", "random init")
        for k in args.k:
            result = score_object_centricity(
                inputs, k, model, kmeans_cfg.PAINT_STRIDE, kmeans_cfg.NUM_ITERS,
                args.seed, args.batch_size, args.log_period,
            )
            summary = result.summary()
            print(f"{label}, k={k}, {args.dataset}: {format_summary(summary)}")
            results.append({
                "weights": weights or "",
                "mode": mode,
                "iteration": iteration,
                "k": k,
                **summary,
                "per_image": result.per_image(),
            })
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        record = {
            "config_file": args.config_file,
            "r2o_mode": cfg.MODEL.R2O.MODE,
            "dataset": args.dataset,
            "num_images": len(inputs),
            "seed": args.seed,
            "opts": args.opts,
            "results": results,
        }
        with open(args.output, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
