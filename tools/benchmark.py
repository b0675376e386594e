#!/usr/bin/env python
"""Speed, memory, FLOPs and size of a config's model (or its data loader).

    python tools/benchmark.py --config-file CFG --task {inference,train,data} \\
        --device {cpu,cuda} [--input-size H W] [--warmup N] [--iters N] \\
        [--batch-size N] [--compare CFG2 [--compare-opts "KEY VALUE ..."]] \\
        [--threads N] [--amp] [--fold-bn] [--output results.json] [KEY VALUE ...]

Tasks (latency is the median over ``--iters`` warm calls, after ``--warmup``):

- inference: ``model(batch)`` under ``torch.no_grad()`` in eval mode, on a batch
  of random images of ``--input-size`` (default: MIN_SIZE_TEST square, capped
  by MAX_SIZE_TEST), given as a data loader gives them (CPU tensors, so the
  copy to the device is included). Also FLOPs of one image (fvcore).
  ``--amp`` runs it under ``torch.autocast`` (fp16 on CUDA, bf16 on CPU).
  ``--fold-bn`` first folds eval-mode batch norms into the convolutions of
  every model timed (``d2ext.layers.fold_batch_norms``), as a deployment would.
- train: one full training step as the Trainer runs it (detectron2's
  SimpleTrainer / AMPTrainer ``run_step``: forward, backward, the optimizer
  of ``Trainer.build_optimizer``, loss logging) on batches of the Trainer's
  train loader, fetched before timing; or, with ``--input-size``, on random
  images with random ground truth for the targets the model declares.
- data: the time to get one batch from the Trainer's train loader.

``--backend onnxruntime`` (inference) also exports each config's model
(``d2ext.deploy``: batch norms folded, traced at the input size) and times it on
ONNX Runtime (CUDA provider with --device cuda where onnxruntime has it, else
CPU; ``--threads`` threads) interleaved with the eager model, on the same
input and with the same post-processing (sem_seg at the input size; instance
masks pasted). Rows ``<role>_onnxruntime``; ``ratio_onnxruntime`` is
onnxruntime / eager per config.

``--compare CFG2`` benchmarks a second config in the same run, alternating the
two models' calls so that a busy period of the machine slows both alike, and
reports the ratios CFG2 / CFG. Trailing ``KEY VALUE`` pairs apply to both;
``--compare-opts`` only to CFG2 (``--compare`` may then name CFG itself, to
compare two settings of one config).

Output: one Markdown table row per config (with its header) on stdout, and with
``--output`` a json file: ``command``, ``argv``, ``cwd``, ``task``, ``device``,
``environment`` (versions, device name, threads, git revision), ``results``
(one dict per config, keys listed in RESULT_KEYS), with --compare ``ratio``
(compare / config), and ``markdown`` (the printed lines).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import logging
import os
import shlex
import sys
import tempfile
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration; needs `make setup`)

import torch  # noqa: E402
from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.engine import AMPTrainer, SimpleTrainer  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from d2ext.tool_logging import setup_tool_logging as setup_logging  # noqa: E402
from d2ext.benchmark import (  # noqa: E402
    count_flops,
    count_parameters,
    environment,
    measure_interleaved,
    synthetic_inputs,
)
from d2ext.layers import fold_batch_norms  # noqa: E402
from d2ext.model_io import model_targets  # noqa: E402

logger = logging.getLogger("d2ext.benchmark")

TASKS = ("inference", "train", "data")

# Keys of each entry of the json's "results" (None where a task does not measure it).
RESULT_KEYS = (
    "role", "name", "config_file", "opts", "task", "device", "precision", "input_size",
    "batch_size", "warmup", "iters", "latency_ms_median", "latency_ms_mean", "latency_ms_min",
    "latency_ms_max", "latency_ms_stdev", "latency_ms_all", "latency_ms_per_image",
    "images_per_s", "peak_memory_mb", "peak_memory_kind", "peak_memory_reset", "gflops",
    "gflops_by_module", "flops_unsupported_ops", "params", "params_trainable", "weights",
    "backend",
)
BACKENDS = ("pytorch", "onnxruntime")
RATIO_KEYS = ("latency_ms_median", "images_per_s", "peak_memory_mb", "gflops", "params")

MARKDOWN_HEADER = (
    "| config | task | device | input (HxW) | batch | latency ms (median) | images/s "
    "| peak mem (MiB) | GFLOPs | params (M) |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


class UsageError(ValueError):
    """A bad argument: reported without a traceback."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark a d2ext config: latency, throughput, memory, FLOPs, parameters.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python tools/benchmark.py --config-file CFG --task inference "
        "--device cpu --output bench.json MODEL.WEIGHTS output/model_final.pth",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--task", choices=TASKS, default="inference")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
        help="synthetic image size; inference default: the config's test size; "
        "train: use synthetic batches with random ground truth instead of the train loader",
    )
    parser.add_argument(
        "--test-images", type=int, default=0, metavar="N",
        help="inference: the first N images of DATASETS.TEST[0] through the test mapper, one per "
        "call in turn, instead of a synthetic image (a model whose work depends on the image, "
        "such as AdaptIS's assembly or a detector's detections, needs real images and weights)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument("--iters", type=int, default=10, help="timed calls (default 10)")
    parser.add_argument(
        "--batch-size", type=int, default=None,
        help="images per call; default 1 for inference, SOLVER.IMS_PER_BATCH otherwise",
    )
    parser.add_argument("--compare", metavar="FILE", default=None,
                        help="a second config, benchmarked interleaved with the first")
    parser.add_argument("--compare-opts", default="", metavar='"KEY VALUE ..."',
                        help="overrides for the --compare config only, as one quoted string")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--fold-bn", action="store_true",
        help="inference: fold eval-mode batch norms into the convolutions of every "
        "model timed (d2ext.layers.fold_batch_norms), a deployment step",
    )
    parser.add_argument(
        "--amp", action="store_true",
        help="inference under torch.autocast: fp16 on CUDA, bf16 on CPU (reported as 'precision')",
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="pytorch",
        help="onnxruntime: also time each model exported to ONNX on ONNX Runtime, "
        "interleaved with eager PyTorch (inference, one image per call)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--output", default=None, metavar="JSON", help="write results here")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER,
                        help="config overrides (KEY VALUE pairs) for every config")
    return parser


# ---------------------------------------------------------------------------- setup


# --amp: the half-precision type each device's autocast runs its matmuls and convs in.
AMP_PRECISION = {"cuda": "fp16", "cpu": "bf16"}
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def inference_precision(args) -> str:
    """Inference precision: "fp32", or with --amp autocast's type on --device (fp16 / bf16)."""
    return AMP_PRECISION[args.device] if args.amp else "fp32"


def default_input_size(cfg) -> Tuple[int, int]:
    """A square of the test-time shorter side, capped by the longer-side limit."""
    side = min(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    return side, side


def _load_cfg(config_file: str, opts: Sequence[str], args) -> Any:
    from d2ext.engine import load_cfg

    if not os.path.isfile(config_file):
        raise UsageError(f"config file {config_file!r}: no such file")
    opts = list(opts) + ["MODEL.DEVICE", args.device]
    if args.batch_size is not None and args.task != "inference":
        opts += ["SOLVER.IMS_PER_BATCH", str(args.batch_size)]
    cfg = load_cfg(config_file, opts)
    cfg.freeze()
    return cfg


def _build_model(cfg, warn_if_random: bool) -> torch.nn.Module:
    from d2ext.engine import Trainer

    torch.manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    model = Trainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    elif warn_if_random:
        logger.warning("MODEL.WEIGHTS is empty: benchmarking random weights (a detector's "
                       "speed depends on its number of detections)")
    return model


class _Run:
    """One config prepared for a task: the callable to time and what it processes."""

    def __init__(self, role: str, config_file: str, opts: Sequence[str], args,
                 own_opts: Sequence[str] = ()):
        self.role, self.config_file, self.opts = role, config_file, list(opts)
        self.own_opts = list(own_opts)  # what sets this run apart, for its name
        self.cfg = _load_cfg(config_file, self.opts, args)
        self.batch_size = 1
        self.task = args.task
        self.precision: Optional[str] = None  # inference only
        self.model: Optional[torch.nn.Module] = None
        self.inputs: Optional[List[Dict[str, Any]]] = None
        self.input_size: Optional[Tuple[int, int]] = None
        self._keepalive: List[Any] = []
        builder = {"inference": self._inference, "train": self._train, "data": self._data}
        self.fn: Callable[[], Any] = builder[args.task](args)

    @property
    def name(self) -> str:
        stem = os.path.splitext(os.path.basename(self.config_file))[0]
        return " ".join([stem, *self.own_opts])

    def _inference(self, args) -> Callable[[], Any]:
        self.batch_size = args.batch_size or 1
        self.input_size = (
            tuple(args.input_size) if args.input_size else default_input_size(self.cfg)
        )
        self.model = _build_model(self.cfg, warn_if_random=True).eval()
        if args.fold_bn:
            folded = fold_batch_norms(self.model)
            logger.info("%s: folded %d batch norms into convolutions", self.name, folded)
        if args.test_images:
            pool = self._test_images(args.test_images)
            self.inputs = pool[0]
            self.input_size = tuple(self.inputs[0]["image"].shape[-2:])
        else:
            self.inputs = synthetic_inputs(self.batch_size, *self.input_size, seed=self.cfg.SEED)
            pool = [self.inputs]
        model, batches = self.model, itertools.cycle(pool)

        self.precision = inference_precision(args)
        autocast_dtype = AUTOCAST_DTYPES.get(self.precision)  # None: fp32, autocast off

        def infer():
            with torch.no_grad(), torch.autocast(
                args.device, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                return model(next(batches))

        return infer

    def _test_images(self, n: int) -> List[List[Dict[str, Any]]]:
        """The first ``n`` images of DATASETS.TEST[0], mapped, as one-image batches."""
        from detectron2.data import DatasetCatalog

        from d2ext.data.mapper import CommonDatasetMapper

        if not self.cfg.DATASETS.TEST:
            raise UsageError(f"--test-images: {self.config_file} has no DATASETS.TEST")
        name = self.cfg.DATASETS.TEST[0]
        dicts = DatasetCatalog.get(name)[:n]
        mapper = CommonDatasetMapper(self.cfg, is_train=False)
        logger.info("%s: %d images of %s", self.name, len(dicts), name)
        return [[mapper(d)] for d in dicts]

    def _train(self, args) -> Callable[[], Any]:
        from d2ext.engine import Trainer

        cfg = self.cfg
        self.batch_size = cfg.SOLVER.IMS_PER_BATCH
        self.model = _build_model(cfg, warn_if_random=False).train()
        optimizer = Trainer.build_optimizer(cfg, self.model)
        if args.input_size:
            self.input_size = tuple(args.input_size)
            targets = model_targets(cfg)
            try:
                pool = [synthetic_inputs(
                    self.batch_size, *self.input_size, targets=sorted(targets),
                    num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
                    num_sem_seg_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, seed=cfg.SEED,
                )]
            except ValueError as e:
                raise UsageError(str(e)) from e
        else:
            pool = self._prefetch(min(args.warmup + args.iters, 10))
        trainer_cls = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        trainer = trainer_cls(self.model, itertools.cycle(pool), optimizer)
        # The schedule's first iterations, as in training: without its warm-up, the
        # full base LR on a random model can diverge within the benchmark's steps.
        scheduler = Trainer.build_lr_scheduler(cfg, optimizer)

        def step():
            trainer.run_step()
            scheduler.step()

        return step

    def _prefetch(self, n: int) -> List[Any]:
        """``n`` batches of the train loader, whose workers are then stopped (they
        would otherwise keep loading, on the cores being measured)."""
        from d2ext.engine import Trainer

        it = iter(Trainer.build_train_loader(self.cfg))
        batches = [next(it) for _ in range(n)]
        if hasattr(it, "close"):
            it.close()
        del it
        return batches

    def _data(self, args) -> Callable[[], Any]:
        from d2ext.engine import Trainer

        self.batch_size = self.cfg.SOLVER.IMS_PER_BATCH
        it = iter(Trainer.build_train_loader(self.cfg))
        self._keepalive.append(it)
        return lambda: next(it)


class _ExportedRun:
    """An inference _Run's model exported to ONNX and run on ONNX Runtime, same input."""

    backend = "onnxruntime"

    def __init__(self, source: _Run, args, directory: str):
        from d2ext.deploy import default_task, export_model, instances_from_outputs, load_exported

        self.role, self.config_file, self.opts = f"{source.role}_onnxruntime", source.config_file, source.opts
        self.own_opts, self.cfg, self.task = source.own_opts + ["[onnxruntime]"], source.cfg, source.task
        self.batch_size, self.precision, self.input_size = 1, "fp32", source.input_size
        self.model: Optional[torch.nn.Module] = None  # no parameters or FLOPs of its own
        self.inputs = source.inputs
        model = copy.deepcopy(source.model)
        fold_batch_norms(model)  # the export is folded whatever --fold-bn says of eager
        task = default_task(self.cfg)
        export_model(model, self.inputs[0]["image"], directory, fmt="onnx", task=task)
        providers = None if args.device == "cuda" else ["CPUExecutionProvider"]
        exported = load_exported(directory, providers=providers, threads=args.threads)
        logger.info("%s: ONNX Runtime providers %s", self.name, exported.providers)
        image = self.inputs[0]["image"]
        h, w = self.input_size

        def infer():
            if task == "sem_seg":
                return exported(image[None].float())["sem_seg"]
            return instances_from_outputs(exported(image.float()), h, w)

        self.fn: Callable[[], Any] = infer

    name = _Run.name


# ---------------------------------------------------------------------------- report


def _result(run: _Run, stats: Dict[str, Any], args) -> Dict[str, Any]:
    res: Dict[str, Any] = {k: None for k in RESULT_KEYS}
    res.update(
        role=run.role, name=run.name, config_file=run.config_file, opts=run.opts,
        task=run.task, device=args.device, backend=getattr(run, "backend", "pytorch"),
        precision=run.precision,
        input_size=list(run.input_size) if run.input_size else None,
        batch_size=run.batch_size, warmup=args.warmup, iters=stats["iters"],
    )
    for k in ("latency_ms_median", "latency_ms_mean", "latency_ms_min", "latency_ms_max",
              "latency_ms_stdev", "latency_ms_all", "peak_memory_mb", "peak_memory_kind",
              "peak_memory_reset"):
        res[k] = stats.get(k)
    res["latency_ms_per_image"] = stats["latency_ms_median"] / run.batch_size
    res["images_per_s"] = stats["items_per_s"]
    if run.model is not None:
        res.update(count_parameters(run.model))
        res["weights"] = run.cfg.MODEL.WEIGHTS
    if run.task == "inference" and not args.no_flops and run.model is not None:
        flops = count_flops(run.model, (run.inputs[:1],))
        res["gflops"] = flops["gflops"]
        res["gflops_by_module"] = flops["by_module"]
        res["flops_unsupported_ops"] = flops["unsupported_ops"]
        if flops["unsupported_ops"]:
            logger.info("%s: FLOPs of these ops are not counted: %s", run.name,
                        ", ".join(f"{k} (x{v})" for k, v in flops["unsupported_ops"].items()))
    return res


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_row(res: Dict[str, Any]) -> str:
    size = "x".join(str(s) for s in res["input_size"]) if res["input_size"] else "loader"
    params = None if res["params"] is None else res["params"] / 1e6
    cells = [
        res["name"], res["task"], res["device"], size, str(res["batch_size"]),
        _fmt(res["latency_ms_median"], ".2f"), _fmt(res["images_per_s"], ".2f"),
        _fmt(res["peak_memory_mb"], ".0f"), _fmt(res["gflops"], ".2f"), _fmt(params, ".2f"),
    ]
    return "| " + " | ".join(cells) + " |"


def ratios(base: Dict[str, Any], other: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """other / base for each of RATIO_KEYS (None where either is missing or zero)."""
    out = {}
    for k in RATIO_KEYS:
        a, b = base.get(k), other.get(k)
        out[k] = b / a if a and b is not None else None
    return out


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs the benchmark; returns what it writes to ``--output``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_parser().parse_args(argv)
    setup_logging()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA device")
    if args.iters < 1 or args.warmup < 0:
        raise UsageError("--iters must be >= 1 and --warmup >= 0")
    if args.task == "data" and args.input_size:
        raise UsageError("--input-size does not apply to --task data (it measures the loader)")
    if args.amp and args.task != "inference":
        raise UsageError("--amp applies to --task inference only (training uses SOLVER.AMP.ENABLED)")
    if args.test_images and (args.task != "inference" or args.input_size or (args.batch_size or 1) != 1):
        raise UsageError("--test-images applies to --task inference with one image per call and no --input-size")
    if args.fold_bn and args.task != "inference":
        raise UsageError("--fold-bn applies to --task inference only (training needs the batch norms)")
    if args.backend == "onnxruntime" and (
        args.task != "inference" or (args.batch_size or 1) != 1 or args.amp or args.test_images
    ):
        raise UsageError("--backend onnxruntime times fp32 inference of one image per call at one "
                         "size: no --task train/data, --batch-size > 1, --amp or --test-images")
    if args.threads:
        torch.set_num_threads(args.threads)

    runs = [_Run("config", args.config_file, args.opts, args)]
    if args.compare:
        own_opts = shlex.split(args.compare_opts)
        runs.append(_Run("compare", args.compare, list(args.opts) + own_opts, args, own_opts))
    elif args.compare_opts:
        raise UsageError("--compare-opts needs --compare")
    torch.backends.cudnn.benchmark = bool(runs[0].cfg.CUDNN_BENCHMARK)
    export_dir = tempfile.TemporaryDirectory(prefix="d2ext_benchmark_export_")
    if args.backend == "onnxruntime":
        eager_runs = list(runs)
        runs += [_ExportedRun(r, args, os.path.join(export_dir.name, r.role)) for r in eager_runs]

    logger.info("Timing %s: %d warm-up + %d timed calls%s", args.task, args.warmup, args.iters,
                ", interleaved" if len(runs) > 1 else "")
    with EventStorage(0):  # the trainers' run_step logs its losses into one
        stats = measure_interleaved(
            {r.role: r.fn for r in runs}, args.warmup, args.iters, args.device,
            items_per_call={r.role: r.batch_size for r in runs},
        )
    results = [_result(r, stats[r.role], args) for r in runs]

    report: Dict[str, Any] = {
        "command": shlex.join(["python", "tools/benchmark.py", *argv]),
        "argv": argv,
        "cwd": os.getcwd(),
        "task": args.task,
        "device": args.device,
        "environment": environment(args.device),
        "results": results,
    }
    lines = MARKDOWN_HEADER.splitlines() + [markdown_row(r) for r in results]
    export_dir.cleanup()
    by_role = {r["role"]: r for r in results}
    if "compare" in by_role:
        report["ratio"] = ratios(by_role["config"], by_role["compare"])
        lines.append("")
        lines.append("ratio compare / config: " + ", ".join(
            f"{k} x{v:.3f}" for k, v in report["ratio"].items() if v is not None
        ))
    if args.backend == "onnxruntime":
        report["ratio_onnxruntime"] = {}
        for role in ("config", "compare"):
            if role in by_role:
                ratio = ratios(by_role[role], by_role[f"{role}_onnxruntime"])["latency_ms_median"]
                report["ratio_onnxruntime"][role] = ratio
                lines.append(f"latency onnxruntime / eager ({by_role[role]['name']}): x{ratio:.3f}")
    report["markdown"] = lines
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        logger.info("Wrote %s", args.output)
    print("\n".join(lines), flush=True)
    return report


if __name__ == "__main__":
    try:
        main()
    except UsageError as e:
        get_parser().exit(2, f"benchmark.py: error: {e}\n")
