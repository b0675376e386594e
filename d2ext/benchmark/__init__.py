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

from .device import peak_memory_mb, reset_peak_memory, synchronize
from .environment import environment
from .flops import count_flops, count_parameters
from .inputs import synthetic_inputs
from .report import tool_report, write_json
from .timing import measure, measure_interleaved, summarize_times

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
    "tool_report",
    "write_json",
]
