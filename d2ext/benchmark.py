"""Reusable measurement primitives: latency, peak memory, FLOPs, parameters, environment.

``tools/benchmark.py`` is built on these; a project measuring one component
(a head alone, a matcher, ...) calls them from its own script::

    from d2ext.benchmark import count_flops, measure
    head = model.sem_seg_head.eval()
    with torch.no_grad():
        stats = measure(lambda: head(features), warmup=3, iters=20, device="cuda")
        flops = count_flops(head, (features,))
    print(stats["latency_ms_median"], flops["gflops"])

Latency is the median of warm runs: these machines are shared and noisy, and
the median ignores the occasional stall that a mean would absorb. To compare
two variants, ``measure_interleaved`` alternates their runs so that a slow
period of the machine hits both alike.

FLOPs follow fvcore's convention: one fused multiply-add counts as one flop
(so "GFLOPs" here are GMACs, as in detectron2's and most papers' tables).
Operators fvcore has no formula for are skipped and listed in
``unsupported_ops``; element-wise and reduction operators are skipped on purpose,
as detectron2's own analysis does.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

__all__ = [
    "measure",
    "measure_interleaved",
    "summarize_times",
    "count_flops",
    "count_parameters",
    "reset_peak_memory",
    "peak_memory_mb",
    "synchronize",
    "environment",
    "synthetic_inputs",
]

Device = Union[str, torch.device]

# Element-wise and reduction operators not counted, as in detectron2.utils.analysis
# (which cannot be imported on detectron2 0.6 with today's torch: detectron2.export
# imports caffe2).
_IGNORED_OPS = (
    "aten::add", "aten::add_", "aten::argmax", "aten::argsort", "aten::batch_norm",
    "aten::constant_pad_nd", "aten::div", "aten::div_", "aten::exp", "aten::log2",
    "aten::max_pool2d", "aten::meshgrid", "aten::mul", "aten::mul_", "aten::neg",
    "aten::nonzero_numpy", "aten::reciprocal", "aten::rsub", "aten::sigmoid",
    "aten::sigmoid_", "aten::softmax", "aten::sort", "aten::sqrt", "aten::sub",
    "torchvision::nms",
)


def _is_cuda(device: Device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: Device) -> None:
    """Waits for queued CUDA work on ``device``; a no-op on CPU."""
    if _is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


# ---------------------------------------------------------------------------- memory

_PROC_STATUS = "/proc/self/status"
_PROC_CLEAR_REFS = "/proc/self/clear_refs"


def _read_vmhwm_kb() -> Optional[int]:
    try:
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_memory(device: Device) -> bool:
    """Starts a new peak-memory window; returns False where the peak cannot be reset.

    CUDA: ``torch.cuda.reset_peak_memory_stats``. CPU: writing "5" to
    ``/proc/self/clear_refs`` resets the resident-set high-water mark (VmHWM) to
    the current RSS (Linux >= 4.0); elsewhere the peak stays process-wide.
    """
    if _is_cuda(device):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
        return True
    try:
        with open(_PROC_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: Device) -> Optional[float]:
    """Peak memory since the last reset, in MiB; None where it cannot be read.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not the caching
    allocator's reserve). CPU: the process's peak resident set (VmHWM), which
    includes the Python interpreter, torch and every model in the process.
    """
    if _is_cuda(device):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    kb = _read_vmhwm_kb()
    return None if kb is None else kb / 1024


def peak_memory_kind(device: Device) -> str:
    return "cuda_max_memory_allocated" if _is_cuda(device) else "cpu_peak_rss_vmhwm"


# ---------------------------------------------------------------------------- timing


def summarize_times(times_s: Sequence[float], items_per_call: int = 1) -> Dict[str, Any]:
    """Latency statistics (ms) of timed calls and throughput (items/s) from the median."""
    if not times_s:
        raise ValueError("no timed calls to summarize (iters must be >= 1)")
    median = statistics.median(times_s)
    return {
        "latency_ms_median": median * 1e3,
        "latency_ms_mean": statistics.fmean(times_s) * 1e3,
        "latency_ms_min": min(times_s) * 1e3,
        "latency_ms_max": max(times_s) * 1e3,
        "latency_ms_stdev": (statistics.stdev(times_s) if len(times_s) > 1 else 0.0) * 1e3,
        "latency_ms_all": [t * 1e3 for t in times_s],
        "iters": len(times_s),
        "items_per_call": items_per_call,
        "items_per_s": items_per_call / median if median > 0 else float("inf"),
    }


def measure_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    warmup: int = 3,
    iters: int = 10,
    device: Device = "cpu",
    *,
    items_per_call: Union[int, Mapping[str, int]] = 1,
    timer: Callable[[], float] = time.perf_counter,
    track_memory: bool = True,
) -> Dict[str, Dict[str, Any]]:
    """Times several callables with their runs interleaved; returns one summary per name.

    Each round runs every callable once, the order rotating from round to round
    so that none always runs right after another. ``warmup`` rounds are run
    first and not timed. On CUDA the device is synchronized before starting
    and after each call, so a call's time includes its kernels.

    Args:
        fns: name -> callable taking no arguments (bind inputs with a closure).
        items_per_call: images (or items) one call processes, for ``items_per_s``;
            one number for all, or one per name.
        timer: the clock, in seconds (injectable for tests).
        track_memory: record each callable's peak memory over its timed calls
            (``peak_memory_mb``, see :func:`peak_memory_mb` for what is measured).

    Returns:
        name -> :func:`summarize_times` dict plus ``warmup``, ``peak_memory_mb``,
        ``peak_memory_kind`` and ``peak_memory_reset`` (False: a process-wide peak).
    """
    names = list(fns)
    if not names:
        raise ValueError("nothing to measure")
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    times: Dict[str, List[float]] = {n: [] for n in names}
    peaks: Dict[str, Optional[float]] = {n: None for n in names}
    resettable = True

    for r in range(warmup + iters):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            timed = r >= warmup
            if timed and track_memory:
                resettable = reset_peak_memory(device) and resettable
            synchronize(device)
            start = timer()
            fns[name]()
            synchronize(device)
            elapsed = timer() - start
            if timed:
                times[name].append(elapsed)
                if track_memory:
                    peak = peak_memory_mb(device)
                    if peak is not None:
                        peaks[name] = peak if peaks[name] is None else max(peaks[name], peak)

    out = {}
    for name in names:
        n_items = items_per_call[name] if isinstance(items_per_call, Mapping) else items_per_call
        summary = summarize_times(times[name], n_items)
        summary["warmup"] = warmup
        if track_memory:
            summary["peak_memory_mb"] = peaks[name]
            summary["peak_memory_kind"] = peak_memory_kind(device)
            summary["peak_memory_reset"] = resettable
        out[name] = summary
    return out


def measure(
    fn: Callable[[], Any],
    warmup: int = 3,
    iters: int = 10,
    device: Device = "cpu",
    *,
    items_per_call: int = 1,
    timer: Callable[[], float] = time.perf_counter,
    track_memory: bool = True,
) -> Dict[str, Any]:
    """Median latency (and more) of ``fn()`` over ``iters`` warm calls.

    Gradients are the caller's choice: wrap in ``torch.no_grad()`` for inference.
    Returns the keys of :func:`summarize_times` (``latency_ms_median``,
    ``items_per_s``, ...) plus the memory keys of :func:`measure_interleaved`.
    """
    return measure_interleaved(
        {"fn": fn}, warmup, iters, device,
        items_per_call=items_per_call, timer=timer, track_memory=track_memory,
    )["fn"]


# ---------------------------------------------------------------------------- FLOPs


def _flatten_tensors(obj: Any, out: List[torch.Tensor]) -> List[torch.Tensor]:
    """Every tensor inside ``obj`` (lists, tuples, dicts, Instances, Boxes-like), in order."""
    from detectron2.structures import Instances

    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _flatten_tensors(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            _flatten_tensors(x, out)
    elif isinstance(obj, Instances):
        for x in obj.get_fields().values():
            _flatten_tensors(x, out)
    elif isinstance(getattr(obj, "tensor", None), torch.Tensor):  # Boxes, BitMasks, ...
        out.append(obj.tensor)
    return out


class _TraceAdapter(nn.Module):
    """Presents ``fn(*inputs)`` to the JIT tracer as tensors in, tensors out.

    The tensors inside ``inputs`` are the traced arguments; everything else in
    the inputs (image sizes, file names) is fixed, and non-tensor outputs are
    dropped. Valid only for the one trace with these very inputs, which is all
    FLOP counting needs.
    """

    def __init__(self, fn: Callable, inputs: tuple, modules: Sequence[nn.Module] = ()):
        super().__init__()
        # The tracer only accepts parameters that belong to the traced module, so
        # the modules a plain function calls are registered too. fvcore then names
        # submodules "module.<child>..." (children of a module; "module.<i>" for
        # the i-th of ``modules``).
        if isinstance(fn, nn.Module):
            self.module = fn
            self._fn = None
        else:
            self.module = nn.ModuleList(modules)
            self._fn = fn
        self.inputs = inputs
        self.flat_inputs = tuple(_flatten_tensors(inputs, []))

    def forward(self, *flat_inputs: torch.Tensor):
        if len(flat_inputs) != len(self.flat_inputs) or any(
            a is not b for a, b in zip(flat_inputs, self.flat_inputs)
        ):
            raise ValueError("_TraceAdapter must be traced with its own flat_inputs")
        fn = self.module if self._fn is None else self._fn
        return tuple(_flatten_tensors(fn(*self.inputs), []))


def count_flops(
    model_or_fn: Union[nn.Module, Callable],
    inputs: Any,
    *,
    modules: Sequence[nn.Module] = (),
) -> Dict[str, Any]:
    """FLOPs of one call ``model_or_fn(*inputs)``, by tracing it once with fvcore.

    Args:
        model_or_fn: a module or any callable; a detectron2 meta-architecture
            taking ``list[dict]`` works (put it in eval mode for inference FLOPs).
        inputs: a tuple of positional arguments, or a single argument (e.g. the
            ``list[dict]`` batch of a detectron2 model). Tensors may sit inside
            lists, dicts and detectron2 structures.
        modules: for a plain function, the modules it calls whose parameters
            require grad (the JIT tracer rejects such parameters unless it
            knows their module). A bound method's module is added by itself.

    Returns:
        ``gflops`` (total / 1e9), ``by_operator`` (op -> GFLOPs), ``by_module``
        (child module name -> GFLOPs, for a module; index of ``modules`` for a
        function), ``unsupported_ops`` (op -> number of calls skipped as zero).

    The count depends on the input: e.g. a detector's heads cost in proportion to
    its number of detections.
    """
    from fvcore.nn import FlopCountAnalysis

    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    modules = list(modules)
    owner = getattr(model_or_fn, "__self__", None)
    if isinstance(owner, nn.Module) and not any(owner is m for m in modules):
        modules.append(owner)
    adapter = _TraceAdapter(model_or_fn, inputs, modules)
    with torch.no_grad():
        analysis = FlopCountAnalysis(adapter, adapter.flat_inputs)
        analysis.set_op_handle(**{op: None for op in _IGNORED_OPS})
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        try:
            total = analysis.total()
        except RuntimeError as e:
            if "requires grad as a constant" not in str(e):
                raise
            raise RuntimeError(
                "count_flops: the function uses a parameter of a module the tracer does "
                "not know; pass that module in modules=[...]"
            ) from e
        by_operator = analysis.by_operator()
        by_module = analysis.by_module()
        unsupported = analysis.unsupported_ops()
    prefix = "module."
    children = {
        name[len(prefix):]: v / 1e9
        for name, v in by_module.items()
        if name.startswith(prefix) and "." not in name[len(prefix):]
    }
    return {
        "gflops": total / 1e9,
        "by_operator": {k: v / 1e9 for k, v in sorted(by_operator.items())},
        "by_module": children,
        "unsupported_ops": dict(sorted(unsupported.items())),
    }


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Number of parameters (shared parameters counted once), and of trainable ones."""
    params = list(model.parameters())  # .parameters() already de-duplicates shared ones
    return {
        "params": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
    }


# ---------------------------------------------------------------------------- inputs


def synthetic_inputs(
    batch_size: int,
    height: int,
    width: int,
    *,
    targets: Sequence[str] = (),
    num_classes: int = 1,
    num_sem_seg_classes: int = 1,
    instances_per_image: int = 3,
    seed: int = 0,
) -> List[Dict[str, Any]]:
    """A detectron2 batch of random images, with random ground truth if asked.

    Args:
        targets: subset of {"instances", "sem_seg"} (the common mapper's names):
            "instances" adds ``Instances`` with gt_boxes, gt_classes in
            [0, num_classes) and box-shaped ``BitMasks``; "sem_seg" adds a (H, W)
            long map of labels in [0, num_sem_seg_classes).

    Returns:
        list of dicts with "image" (3, H, W) float32 in [0, 255] on the CPU, as a
        data loader gives it, "height", "width", and the requested targets.
    """
    from detectron2.structures import BitMasks, Boxes, Instances

    unknown = set(targets) - {"instances", "sem_seg"}
    if unknown:
        raise ValueError(
            f"cannot synthesize targets {sorted(unknown)}; only 'instances' and 'sem_seg'. "
            "Benchmark training on the train loader instead (leave out --input-size)."
        )
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(batch_size):
        item: Dict[str, Any] = {
            "image": torch.randint(0, 256, (3, height, width), generator=g).float(),
            "height": height,
            "width": width,
        }
        if "instances" in targets:
            n = instances_per_image
            # Boxes of at least a quarter of the image side, inside the image.
            wh = torch.rand(n, 2, generator=g) * 0.5 + 0.25
            xy0 = torch.rand(n, 2, generator=g) * (1 - wh)
            scale = torch.tensor([width, height], dtype=torch.float32)
            boxes = torch.cat([xy0 * scale, (xy0 + wh) * scale], dim=1)
            masks = torch.zeros(n, height, width, dtype=torch.bool)
            for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                masks[i, y0:y1, x0:x1] = True
            inst = Instances((height, width))
            inst.gt_boxes = Boxes(boxes)
            inst.gt_classes = torch.randint(0, num_classes, (n,), generator=g)
            inst.gt_masks = BitMasks(masks)
            item["instances"] = inst
        if "sem_seg" in targets:
            item["sem_seg"] = torch.randint(0, num_sem_seg_classes, (height, width), generator=g)
        batch.append(item)
    return batch


# ---------------------------------------------------------------------------- environment


def _git_revision(path: str) -> Optional[str]:
    try:
        rev = subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: Device) -> Dict[str, Any]:
    """Versions, device and threads: what a reader needs to judge a timing."""
    import detectron2
    import fvcore
    import numpy

    try:
        from importlib.metadata import version

        fvcore_version = version("fvcore")
    except Exception:  # noqa: BLE001 (metadata may be missing in a source checkout)
        fvcore_version = getattr(fvcore, "__version__", None)
    dev = torch.device(device)
    env: Dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "detectron2": detectron2.__version__,
        "fvcore": fvcore_version,
        "numpy": numpy.__version__,
        "device": str(dev),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "git_revision": _git_revision(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    }
    if dev.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(dev)
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    else:
        env["device_name"] = env["cpu"]
    return env
