"""Latency of warm calls: ``measure`` and ``measure_interleaved``, medians over runs."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from .device import Device, peak_memory_kind, peak_memory_mb, reset_peak_memory, synchronize


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
