"""Multi-process data-parallel launch on CPU (gloo) or GPU (nccl), one or several machines.

Like detectron2's ``launch`` (same arguments, same ``--num-gpus`` meaning: the
number of processes per machine), but it also runs without CUDA, where
detectron2 0.6's asserts it, and it joins a job started by ``torchrun``
(RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE in the environment).
"""
from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from d2ext.compat import create_local_process_group

DEFAULT_TIMEOUT = timedelta(minutes=30)
logger = logging.getLogger(__name__)


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def started_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _join_process_group(local_rank: int, workers_per_machine: int, **init_kwargs) -> None:
    dist.init_process_group(backend=_backend(), **init_kwargs)
    create_local_process_group(workers_per_machine)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.barrier()


def _worker(local_rank, main_func, world_size, per_machine, machine_rank, dist_url, args, timeout):
    rank = machine_rank * per_machine + local_rank
    try:
        _join_process_group(
            local_rank, per_machine, init_method=dist_url, world_size=world_size, rank=rank, timeout=timeout
        )
    except Exception:
        logger.error(f"could not join the process group at {dist_url} as rank {rank}/{world_size}")
        raise
    main_func(*args)
    dist.destroy_process_group()


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
) -> None:
    """Runs ``main_func(*args)`` in every process of the job.

    ``num_gpus_per_machine`` processes are spawned on this machine (on CPU: that
    many gloo processes). ``dist_url`` "auto" picks a free local port (one machine only).
    """
    if started_by_torchrun():
        _join_process_group(
            int(os.environ["LOCAL_RANK"]),
            int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])),
            init_method="env://",
            timeout=timeout,
        )
        main_func(*args)
        dist.destroy_process_group()
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(
            f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices"
        )
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url must name the main machine (tcp://HOST:PORT) with --num-machines > 1")
        dist_url = f"tcp://127.0.0.1:{_free_port()}"
    mp.start_processes(
        _worker,
        nprocs=num_gpus_per_machine,
        args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
        start_method="spawn",
    )
