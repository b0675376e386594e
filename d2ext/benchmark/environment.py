"""What a reader needs to judge a timing: versions, device, threads, git revision."""
from __future__ import annotations

import os
import platform
import subprocess
from typing import Any, Dict, Optional

import torch

from .device import Device

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        "git_revision": _git_revision(_REPO_ROOT),
    }
    if dev.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(dev)
        env["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    else:
        env["device_name"] = env["cpu"]
    return env
