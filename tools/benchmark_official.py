#!/usr/bin/env python
"""MaskFormer inference, d2ext vs the official code, side by side: same weights, same input.

    python tools/benchmark_official.py --official-source /tmp/mf \\
        [--config ade20k-150/maskformer_R50_bs16_160k.yaml] [--input-size 512 512] \\
        [--warmup 2] [--iters 10] [--threads 1] [--seed 0] [--fold-bn] [--output results.json]

``--official-source`` is a scratch tree of facebookresearch/MaskFormer with
detectron2 v0.6's ``projects/DeepLab`` (laid out as in the docstring of
``tests/fixtures/make_maskformer_official_keys.py``, whose import patches are
used); ``--config`` is a path under its ``configs/``, and d2ext's copy is the
same path under ``configs/maskformer/``.

The two implementations register the same names, so each runs in its own
process (spawned workers; this process only coordinates):

1. the official worker builds the official model (``torch.manual_seed(seed)``,
   the official init), randomizes the constant-initialised values (norms,
   biases, frozen BN statistics; the output fixture's ``_randomize``) and writes its
   state dict to a temporary file; the d2ext worker builds d2ext's model from
   the copy and loads that state dict with ``strict=True``;
2. both run ``model([{"image", "height", "width"}])`` under ``torch.no_grad()``
   in eval mode on the same random image; their outputs are compared here
   (``sem_seg`` logits: max abs difference, argmax agreement; ``panoptic_seg``
   ids where present);
   with ``--fold-bn`` d2ext's frozen batch norms are then folded into its
   convolutions (an inference-mode step the outputs must survive);
3. timing: every round asks each worker for one timed call, the order rotating
   from round to round (as ``d2ext.benchmark.measure_interleaved``), so that a
   change of load on the machine reaches both; ``--warmup`` rounds are not
   timed. The ratio is d2ext's median over the official's.

Prints a Markdown table; ``--output`` writes json with the command, the
environment and every timing.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official-source", required=True, metavar="DIR",
                   help="official MaskFormer tree (mask_former/, configs/, projects/DeepLab)")
    p.add_argument("--config", default="ade20k-150/maskformer_R50_bs16_160k.yaml",
                   help="official config under DIR/configs (d2ext's copy: configs/maskformer/<same path>)")
    p.add_argument("--input-size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads in each worker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fold-bn", action="store_true",
                   help="fold d2ext's frozen batch norms into its convolutions after loading "
                        "(d2ext.layers.fold_batch_norms, an inference-mode step; the outputs are "
                        "still compared with the official's)")
    p.add_argument("--output", default=None, metavar="JSON")
    return p


# ----------------------------------------------------------------------------- workers

def _build_official(args: Dict[str, Any]):
    import d2ext  # noqa: F401  (compat shims only: the installed detectron2 lacks its _C)

    sys.path.insert(0, FIXTURES)
    from make_maskformer_official_keys import _patch_imports, _unregister_d2ext_backbones
    from make_maskformer_official_outputs import _randomize  # every weight matters for the outputs

    _unregister_d2ext_backbones()
    _patch_imports(args["official_source"])
    import torch
    from deeplab import add_deeplab_config
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import mask_former.mask_former_model  # noqa: F401  (registers MaskFormer)
    import mask_former.modeling  # noqa: F401  (registers its heads and pixel decoders)
    from mask_former.config import add_mask_former_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_mask_former_config(cfg)
    cfg.merge_from_file(os.path.join(args["official_source"], "configs", args["config"]))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    torch.manual_seed(args["seed"])
    model = build_model(cfg).eval()
    _randomize(model, args["seed"])
    torch.save(model.state_dict(), args["weights"])
    return model


def _build_d2ext(args: Dict[str, Any]):
    import d2ext_projects  # noqa: F401  (d2ext and every method's registration)
    import torch
    from d2ext import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "maskformer", args["config"]))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(args["weights"]), strict=True)
    if args["fold_bn"]:
        from d2ext.layers import fold_batch_norms

        print(f"[benchmark_official] d2ext: {fold_batch_norms(model)} batch norms folded", flush=True)
    return model


def _worker(role: str, args: Dict[str, Any], conn) -> None:
    """Builds ``role``'s model, then answers "output" / "time" / "stop" requests."""
    import torch

    torch.set_num_threads(args["threads"])
    model = _build_official(args) if role == "official" else _build_d2ext(args)
    h, w = args["input_size"]
    gen = torch.Generator().manual_seed(args["seed"])
    image = torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8).float()
    batch = [{"image": image, "height": h, "width": w}]
    conn.send("ready")
    while True:
        request = conn.recv()
        if request == "stop":
            return
        with torch.no_grad():
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            outputs = model(batch)
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
        if request == "time":
            conn.send({
                "wall": elapsed,
                "user": after.ru_utime - before.ru_utime,
                "sys": after.ru_stime - before.ru_stime,
                "minor_faults": after.ru_minflt - before.ru_minflt,
            })
        elif request == "output":
            result = outputs[0]
            saved = {"sem_seg": result["sem_seg"]} if "sem_seg" in result else {}
            if "panoptic_seg" in result:
                saved["panoptic_ids"] = result["panoptic_seg"][0]
            torch.save(saved, args["outputs_" + role])
            conn.send("saved")


# ----------------------------------------------------------------------------- coordinator

def compare_outputs(official: Dict[str, Any], ours: Dict[str, Any]) -> Dict[str, Any]:
    """-> max abs difference of the sem_seg logits, the share of pixels whose argmax
    agrees, and whether the panoptic ids are identical (where present)."""
    out: Dict[str, Any] = {}
    if "sem_seg" in official:
        a, b = official["sem_seg"], ours["sem_seg"]
        out["sem_seg_max_abs_diff"] = float((a - b).abs().max())
        out["sem_seg_argmax_agreement"] = float((a.argmax(0) == b.argmax(0)).float().mean())
    if "panoptic_ids" in official:
        out["panoptic_ids_equal"] = bool((official["panoptic_ids"] == ours["panoptic_ids"]).all())
    return out


def median_usage(calls: List[Dict[str, float]]) -> Dict[str, float]:
    """Medians over the timed calls of the worker's user and system CPU time (ms) and its
    minor page faults. The system time is mostly first-touch page faults of freshly
    allocated tensors, which are expensive in a virtual machine and vary with its host:
    it tells whether a change of the wall time came from computing or from memory."""
    def median(values: List[float]) -> float:
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    return {
        "user_ms_median": median([c["user"] * 1e3 for c in calls]),
        "sys_ms_median": median([c["sys"] * 1e3 for c in calls]),
        "minor_faults_median": median([c["minor_faults"] for c in calls]),
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import torch

    if not os.path.isfile(os.path.join(args.official_source, "configs", args.config)):
        raise SystemExit(f"--config {args.config}: no such file under {args.official_source}/configs")
    if not os.path.isfile(os.path.join(REPO, "configs", "maskformer", args.config)):
        raise SystemExit(f"--config {args.config}: d2ext has no copy at configs/maskformer/{args.config}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        shared = {
            "official_source": os.path.abspath(args.official_source), "config": args.config,
            "input_size": list(args.input_size), "threads": args.threads, "seed": args.seed,
            "fold_bn": args.fold_bn,
            "weights": os.path.join(tmp, "weights.pth"),
            "outputs_official": os.path.join(tmp, "official.pth"), "outputs_d2ext": os.path.join(tmp, "d2ext.pth"),
        }
        workers = {}
        # the official worker first: it writes the weights the d2ext worker loads
        for role in ("official", "d2ext"):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(role, shared, child), daemon=True)
            proc.start()
            if parent.recv() != "ready":
                raise RuntimeError(f"{role} worker did not start")
            workers[role] = (proc, parent)
            print(f"[benchmark_official] {role} model built", flush=True)
        try:
            for role, (_, conn) in workers.items():
                conn.send("output")
                conn.recv()
            comparison = compare_outputs(torch.load(shared["outputs_official"]), torch.load(shared["outputs_d2ext"]))
            print(f"[benchmark_official] outputs: {comparison}", flush=True)
            names = list(workers)
            times: Dict[str, List[float]] = {n: [] for n in names}
            usage: Dict[str, List[Dict[str, float]]] = {n: [] for n in names}
            for r in range(args.warmup + args.iters):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    conn = workers[name][1]
                    conn.send("time")
                    call = conn.recv()
                    if r >= args.warmup:
                        times[name].append(call["wall"])
                        usage[name].append(call)
                print(f"[benchmark_official] round {r + 1}/{args.warmup + args.iters}: "
                      + ", ".join(f"{n} {times[n][-1] * 1e3:.0f} ms" for n in names if r >= args.warmup and times[n]),
                      flush=True)
        finally:
            for proc, conn in workers.values():
                conn.send("stop")
                proc.join(timeout=30)
    from d2ext.benchmark.timing import summarize_times

    results = {name: {**summarize_times(t), **median_usage(usage[name])} for name, t in times.items()}
    results["ratio_d2ext_to_official"] = results["d2ext"]["latency_ms_median"] / results["official"]["latency_ms_median"]
    results["outputs"] = comparison
    return results


def _cell(r: Dict[str, float]) -> str:
    return f"{r['latency_ms_median']:.0f} ({r['user_ms_median']:.0f} / {r['sys_ms_median']:.0f})"


def markdown(args: argparse.Namespace, results: Dict[str, Any]) -> List[str]:
    h, w = args.input_size
    o, d = results["official"], results["d2ext"]
    lines = [
        "| config | input | threads | official ms (user / sys) | d2ext ms (user / sys) | d2ext / official "
        "| page faults official / d2ext | outputs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| `{args.config}` | {h}×{w} | {args.threads} | {_cell(o)} | {_cell(d)} "
        f"| **{results['ratio_d2ext_to_official']:.2f}×** "
        f"| {o['minor_faults_median']:.0f} / {d['minor_faults_median']:.0f} | "
        + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in results["outputs"].items())
        + " |",
    ]
    return lines


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    args = get_parser().parse_args(argv)
    args.device = "cpu"
    results = run(args)
    lines = markdown(args, results)
    print("\n".join(lines))
    from d2ext.benchmark import tool_report

    return tool_report("tools/benchmark_official.py", argv, args, results, lines)


if __name__ == "__main__":
    main()
