"""Checkpoint files that are never seen half-written.

detectron2 writes ``model_XXXX.pth`` in place and then the ``last_checkpoint``
tag. A process killed during either write leaves a truncated file that the
next ``--resume`` would pick up. Here both are written to a temporary name,
flushed to disk and renamed into place (atomic on POSIX), so ``last_checkpoint``
only ever names a complete file.
"""
from __future__ import annotations

import os
import pickle
from typing import Dict

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer


def _atomic_write(path: str, write, mode: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class AtomicCheckpointer(DetectionCheckpointer):
    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        _atomic_write(save_file, lambda f: torch.save(data, f), "wb")
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        tag = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(tag, lambda f: f.write(last_filename_basename), "w")


def write_model_zoo_pickle(arrays: Dict[str, np.ndarray], path: str, author: str) -> None:
    """Writes ``arrays`` as a detectron2 model-zoo ``.pkl`` (``MODEL.WEIGHTS`` loads it).

    ``matching_heuristics`` is on, so plain backbone names (``stem.conv1.weight``,
    ``res2.0.conv1.norm.running_mean``) land on the model's prefixed ones. Written
    to a temporary name and renamed, so a killed writer never leaves a truncated file.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    data = {"model": arrays, "__author__": author, "matching_heuristics": True}
    _atomic_write(path, lambda f: pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL), "wb")
