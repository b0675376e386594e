#!/usr/bin/env python
"""Linear probe of frozen pretrained features: one 1×1 convolution trained on a semantic dataset.

    python tools/r2o_linear_probe.py --config-file configs/baselines/toy/semantic_fpn_R18_toy.yaml \\
        --weights output/r2o/r2o_R18_toy_1250/backbone_R18.pkl "" [W ...] \\
        [--features res4 res5] [--iters 1000] [--batch-size 8] [--lr 0.1] [--seed 0] \\
        [--output probe.json] [-- KEY VALUE ...]

For each --weights (an exported backbone .pkl, any checkpoint the config's
model loads, or "" for the random-init control): the config's model is built
and loaded with MODEL.WEIGHTS' rules, its backbone frozen in eval mode; the
maps at --features of every image of DATASETS.TRAIN[0] and DATASETS.TEST[0]
(the config's test resize) are computed once; a linear probe
(``d2ext_projects.r2o.linear_probe``) is trained on the training set and
scored by the config's evaluator on the test set (mIoU, fwIoU, mACC, pACC,
from detectron2's SemSegEvaluator for semantic datasets). The probe's seed
is --seed for every weight, so only the features differ.

Output: one summary line per weights on stdout and, with --output, a json of
the arguments and each weight's evaluator results.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from typing import List, Optional

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration)

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from d2ext.engine.setup import load_cfg  # noqa: E402
from d2ext.evaluation import build_evaluator  # noqa: E402
from d2ext.tool_logging import setup_tool_logging  # noqa: E402
from d2ext_projects.r2o.linear_probe import (  # noqa: E402
    evaluate_probe,
    frozen_backbone,
    mapped_images,
    train_probe,
)

logger = logging.getLogger("d2ext.r2o_linear_probe")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True,
                        help="a downstream semantic config; its backbone, datasets and test resize are used")
    parser.add_argument("--weights", nargs="+", default=[""],
                        help='backbone exports or checkpoints, each probed; "" = random init (the default)')
    parser.add_argument("--features", nargs="+", default=["res4", "res5"],
                        help="backbone outputs, resized to the finest of them and concatenated")
    parser.add_argument("--iters", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8, help="images per SGD step")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="of the probe's init and batches")
    parser.add_argument("--output", default="", help="json file of the results")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides, KEY VALUE pairs; after '--' when they follow --weights")
    args = parser.parse_args(argv)
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    if args.iters < 1 or args.batch_size < 1 or args.lr <= 0:
        parser.error("--iters and --batch-size must be >= 1 and --lr > 0")
    return args


def probe_one(cfg, weights: str, args: argparse.Namespace) -> dict:
    """Builds the model with ``weights``, probes its frozen backbone; -> evaluator results."""
    if weights and not os.path.isfile(weights):
        raise SystemExit(f"--weights {weights}: no such file")
    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)  # the random-init control is reproducible
    model = build_model(cfg)
    if weights:
        DetectionCheckpointer(model).load(weights)
    backbone = frozen_backbone(model)
    train_name, test_name = cfg.DATASETS.TRAIN[0], cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(train_name)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    ignore_label = meta.get("ignore_label", cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    common = dict(num_classes=num_classes, ignore_label=ignore_label, backbone=backbone,
                  pixel_mean=model.pixel_mean.cpu(), pixel_std=model.pixel_std.cpu(), features=args.features)
    train = mapped_images(cfg, train_name, True, **common)
    test = mapped_images(cfg, test_name, False, **common)
    probe = train_probe(train, num_classes, ignore_label, args.iters, args.batch_size, args.lr, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        return evaluate_probe(probe, test, build_evaluator(cfg, test_name, tmp))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    setup_tool_logging()
    setup_logger(name="d2ext_projects.r2o", abbrev_name="r2o")
    cfg = load_cfg(args.config_file, args.opts)
    cfg.MODEL.DEVICE = "cpu"
    if not cfg.DATASETS.TRAIN or not cfg.DATASETS.TEST:
        raise SystemExit(f"{args.config_file}: the probe needs DATASETS.TRAIN and DATASETS.TEST")
    results = []
    for weights in args.weights:
        scores = probe_one(cfg, weights, args)
        sem = scores.get("sem_seg", scores)
        print(f"{weights or 'random init'}: linear probe on {'+'.join(args.features)}, "
              f"{cfg.DATASETS.TEST[0]}: mIoU {sem.get('mIoU', float('nan')):.2f}")
        results.append({"weights": weights, "results": scores})
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        record = {"config_file": args.config_file, "features": args.features, "iters": args.iters,
                  "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "opts": args.opts,
                  "train": cfg.DATASETS.TRAIN[0], "test": cfg.DATASETS.TEST[0], "results": results}
        with open(args.output, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
