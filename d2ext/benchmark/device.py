"""Device synchronization and peak memory, CUDA or CPU."""
from __future__ import annotations

from typing import Optional, Union

import torch

Device = Union[str, torch.device]


def _is_cuda(device: Device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: Device) -> None:
    """Waits for queued CUDA work on ``device``; a no-op on CPU."""
    if _is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


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
