#!/usr/bin/env python
"""Per-part time of one R2O (or BYOL) pretraining step, and pretraining images/s.

    python tools/benchmark_r2o.py [--config-file configs/r2o/toy/r2o_R18_toy.yaml]
        [--k K] [--warmup 1] [--iters 5] [--threads N] [--output results.json] [KEY VALUE ...]

Each timed step runs what a training step runs, in the same order, on the
next SOLVER.IMS_PER_BATCH images of DATASETS.TRAIN (new images every step, so
the superpixels are computed, never taken from the cache):

- ``data: views, whole image, SLIC``: the common mapper on each image (the
  r2o_views target), one process, as one loader worker does it;
  ``of which SLIC``: SLIC alone on the same whole images (already in the above;
  0 in BYOL mode, which computes no superpixels);
- the model's parts, timed inside ``R2O.forward`` (``part_timer``): ``target
  forward, whole images`` and ``clustering (pool, K-means, paint)`` (the mask
  prediction, r2o mode only), ``online forward`` (encoder on both views,
  projector, predictor), ``target forward, views``; the rest of the forward
  (mask pooling of the online features, the loss) is ``forward, other``;
- ``backward``, ``optimizer step`` and ``EMA of the target`` (R2OTargetUpdate's
  update, with the momentum of the step).

K is the curriculum's K at iteration 0 (K_START, the costliest clustering)
unless --k gives another (MODEL.R2O.KMEANS.K_START and K_END are set to it).
``--flops`` adds fvcore's count of the encoders' forward FLOPs: the online
encoder on one view, the target encoder on one whole image (up to
MASK_FEATURE, r2o mode), and the step's estimate from them: per image, both
views through the online encoder forward and backward (backward counted as
twice the forward, the usual rule), both through the target encoder, and the
whole image (r2o mode). The projector and predictor (MLPs on pooled vectors,
a few % of the step) are not counted. Dividing a pretraining run's FLOPs by a
fine-tuning step's gives the length of a from-scratch control trained longer
by the pretraining's compute.

Medians over --iters steps after --warmup. In training the loader's workers
prepare the data in parallel with the model's step, so ``images/s`` is given
both for the model's step alone and with the data in series (one core).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import statistics
import sys
import time
from typing import Any, Dict, List

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration; needs `make setup`)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from d2ext.benchmark import tool_report  # noqa: E402
from d2ext.benchmark.device import synchronize  # noqa: E402
from d2ext.benchmark.flops import count_flops  # noqa: E402
from d2ext.data.mapper import CommonDatasetMapper  # noqa: E402
from d2ext.engine import Trainer, load_cfg  # noqa: E402
from d2ext_projects.r2o.hooks import R2OTargetUpdate, ema_update_  # noqa: E402
from d2ext_projects.r2o.meta_arch import backbone_features  # noqa: E402
from d2ext_projects.r2o.superpixels import slic_superpixels  # noqa: E402

DEFAULT_CONFIG = "configs/r2o/toy/r2o_R18_toy.yaml"
DATA, SLIC = "data: views, whole image, SLIC", "of which SLIC"
OTHER = "forward, other"
STEP_PARTS = ("backward", "optimizer step", "EMA of the target")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--k", type=int, default=None, help="clusters (default: MODEL.R2O.KMEANS.K_START)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--flops", action="store_true",
                   help="also count the encoders' forward FLOPs and estimate the step's (fvcore)")
    p.add_argument("--output", default=None, metavar="JSON")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


class PartTimer:
    """Accumulates wall time per named part of the current step (device-synchronised)."""

    def __init__(self, device: str):
        self.device = device
        self.step: Dict[str, float] = collections.defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.step[name] += time.perf_counter() - start


def whole_rgb(batch: List[dict], image_format: str) -> List[np.ndarray]:
    """The batch's (G, G, 3) uint8 RGB whole images, as SLIC gets them."""
    out = []
    for d in batch:
        whole = d["r2o_views"]["whole"]
        whole = whole.flip(0) if image_format == "BGR" else whole
        out.append(np.ascontiguousarray(whole.permute(1, 2, 0).numpy()))
    return out


def encoder_gflops(model, cfg) -> Dict[str, float]:
    """Forward GFLOPs per image of the encoders, and the training step's estimate (see the docstring)."""
    r2o = cfg.MODEL.R2O
    was_training = model.training
    model.eval()  # the same FLOPs; batch norm of one training image would fail on a 1x1 res5
    try:
        view = torch.zeros(1, 3, r2o.VIEWS.CROP_SIZE, r2o.VIEWS.CROP_SIZE, device=model.device)
        out = {"online_per_view": count_flops(model.backbone, view)["gflops"], "target_whole_per_image": 0.0}
        if r2o.MODE == "r2o":
            whole = torch.zeros(1, 3, r2o.VIEWS.WHOLE_SIZE, r2o.VIEWS.WHOLE_SIZE, device=model.device)
            out["target_whole_per_image"] = count_flops(
                lambda x: backbone_features(model.target_backbone, x, [r2o.MASK_FEATURE]), whole,
                modules=[model.target_backbone],
            )["gflops"]
    finally:
        model.train(was_training)
    views = 2
    online_train = 3 * out["online_per_view"]  # forward + backward (twice the forward)
    per_image = views * (online_train + out["online_per_view"]) + out["target_whole_per_image"]
    out["step_estimate"] = cfg.SOLVER.IMS_PER_BATCH * per_image
    return out


def run(args) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device] + list(args.opts)
    if args.k is not None:
        opts += ["MODEL.R2O.KMEANS.K_START", str(args.k), "MODEL.R2O.KMEANS.K_END", str(args.k)]
    cfg = load_cfg(args.config_file, opts)
    model = Trainer.build_model(cfg).train()
    optimizer = Trainer.build_optimizer(cfg, model)
    ema = R2OTargetUpdate(cfg.SOLVER.MAX_ITER, cfg.MODEL.R2O.BASE_MOMENTUM)
    timer = PartTimer(args.device)
    model.part_timer = timer
    mapper = CommonDatasetMapper(cfg, is_train=True)
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    batch_size = cfg.SOLVER.IMS_PER_BATCH
    vr = cfg.MODEL.R2O.VIEWS
    images = itertools.cycle(dicts)

    steps: List[Dict[str, float]] = []
    with EventStorage(0) as storage:
        for i in range(args.warmup + args.iters):
            timer.step = collections.defaultdict(float)
            start = time.perf_counter()
            batch = [mapper(next(images)) for _ in range(batch_size)]
            timer.step[DATA] = time.perf_counter() - start
            start = time.perf_counter()
            if "superpixels" in batch[0]["r2o_views"]:  # BYOL mode's views have none
                for image in whole_rgb(batch, cfg.INPUT.FORMAT):
                    slic_superpixels(image, vr.SLIC_SEGMENTS, vr.SLIC_COMPACTNESS)
            timer.step[SLIC] = time.perf_counter() - start

            synchronize(args.device)
            start = time.perf_counter()
            loss = sum(model(batch).values())
            synchronize(args.device)
            timed = sum(v for k, v in timer.step.items() if k not in (DATA, SLIC))
            timer.step[OTHER] = time.perf_counter() - start - timed
            with timer("backward"):
                optimizer.zero_grad()
                loss.backward()
            with timer("optimizer step"):
                optimizer.step()
            with timer("EMA of the target"):
                for target, online in model.target_pairs():
                    ema_update_(target, online, ema.momentum(storage.iter))
            storage.iter += 1
            if i >= args.warmup:
                steps.append(dict(timer.step))

    names = [n for n in steps[0] if n not in STEP_PARTS] + list(STEP_PARTS)
    median_ms = {n: 1000 * statistics.median(s.get(n, 0.0) for s in steps) for n in names}
    model_ms = sum(v for n, v in median_ms.items() if n not in (DATA, SLIC))
    result = {
        "mode": cfg.MODEL.R2O.MODE,
        "k": model.k_at(0) if cfg.MODEL.R2O.MODE == "r2o" else 1,
        "batch_size": batch_size,
        "views": [vr.CROP_SIZE, vr.WHOLE_SIZE],
        "parts_ms_median": median_ms,
        "model_step_ms": model_ms,
        "images_per_s_model_step": 1000 * batch_size / model_ms,
        "images_per_s_with_data_in_series": 1000 * batch_size / (model_ms + median_ms[DATA]),
        "iters": args.iters,
    }
    if args.flops:
        result["gflops"] = encoder_gflops(model, cfg)
    return result


def markdown(args, result: Dict[str, Any]) -> List[str]:
    parts, model_ms = result["parts_ms_median"], result["model_step_ms"]
    lines = [
        f"{result['mode']}, K {result['k']}, batch {result['batch_size']}, views "
        f"{result['views'][0]} px, whole {result['views'][1]} px, {args.device}, median of {result['iters']} steps",
        "",
        "| part | ms per step | share of the model's step |",
        "| --- | --- | --- |",
    ]
    for name, ms in parts.items():
        share = "" if name in (DATA, SLIC) else f"{100 * ms / model_ms:.0f} %"
        lines.append(f"| {name} | {ms:.0f} | {share} |")
    lines += [
        f"| model step (sum of the model's parts) | {model_ms:.0f} | 100 % |",
        "",
        f"images/s: {result['images_per_s_model_step']:.2f} (model step), "
        f"{result['images_per_s_with_data_in_series']:.2f} (data in series, one core)",
    ]
    if "gflops" in result:
        g = result["gflops"]
        lines.append(
            f"GFLOPs (fvcore, forward): online encoder {g['online_per_view']:.3f} per view, target encoder "
            f"{g['target_whole_per_image']:.3f} per whole image; step estimate {g['step_estimate']:.1f} "
            "(online forward + backward = 3x forward, projector / predictor not counted)"
        )
    return lines


def main(argv=None) -> Dict[str, Any]:
    args = get_parser().parse_args(argv)
    result = run(args)
    lines = markdown(args, result)
    print("\n".join(lines))
    tool_report("tools/benchmark_r2o.py", sys.argv[1:] if argv is None else argv, args, result, lines)
    return result


if __name__ == "__main__":
    main()
