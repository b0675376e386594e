"""SLIC superpixels of R2O's whole-image view, and their per-image cache.

The whole image is the original resized to G x G with no augmentation, so its
superpixels depend only on the file and the settings: they are computed once
per image, kept in memory (per loader worker, bounded) and, when a cache folder
is given, stored there as ``.npy`` files shared by all workers and runs.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import os
import tempfile
from typing import Callable, Optional

import numpy as np
from skimage.segmentation import slic

__all__ = ["SuperpixelCache", "consecutive_labels", "slic_superpixels"]

logger = logging.getLogger(__name__)


def consecutive_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W) int64 labels 0..n-1, every one present,
    in the order of the original values."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int64)


def slic_superpixels(image_rgb: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    """SLIC of an (H, W, 3) uint8 RGB image -> (H, W) int64 labels 0..n-1.

    skimage may skip label values (empty or merged segments under its
    connectivity enforcement); the relabelling makes every value in 0..n-1 occur.
    """
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(
            f"slic_superpixels expects an (H, W, 3) uint8 RGB image, got {image_rgb.dtype} "
            f"{image_rgb.shape}"
        )
    labels = slic(
        image_rgb,
        n_segments=int(n_segments),
        compactness=float(compactness),
        start_label=0,
        channel_axis=-1,
    )
    return consecutive_labels(labels)


def _storage_dtype(labels: np.ndarray) -> np.dtype:
    # Labels are below n_segments: 16 bits almost always suffice (4x less than int64).
    return np.dtype(np.uint16) if labels.max(initial=0) < 1 << 16 else np.dtype(np.int32)


class SuperpixelCache:
    """Superpixels by key, in memory (LRU, ``max_entries``) and optionally on disk.

    Disk entries are written atomically (a temporary file in the same folder,
    then ``os.replace``), so parallel loader workers never read a partial file;
    two workers computing the same image write the same array, the last rename wins.
    A file that cannot be read or has the wrong shape is recomputed and rewritten.
    """

    def __init__(self, cache_dir: str = "", max_entries: int = 4096):
        self.cache_dir = cache_dir
        self.max_entries = int(max_entries)
        self._memory: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict()

    @staticmethod
    def key(file_name: str, whole_size: int, n_segments: int, compactness: float) -> str:
        return f"{file_name}|whole={int(whole_size)}|slic_n={int(n_segments)}|slic_c={float(compactness)!r}"

    def path(self, key: str) -> str:
        """The .npy file of ``key`` in the cache folder (a hash: file names may hold any character)."""
        return os.path.join(self.cache_dir, hashlib.sha1(key.encode("utf-8")).hexdigest() + ".npy")

    def get(self, key: str, shape, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The (H, W) int64 labels of ``key``; ``compute()`` is called on a miss.

        Returns a fresh array each call (callers may modify it).
        """
        stored = self._memory.get(key)
        if stored is None:
            stored = self._load(key, shape)
            if stored is None:
                labels = compute()
                stored = labels.astype(_storage_dtype(labels))
                self._save(key, stored)
            self._remember(key, stored)
        else:
            self._memory.move_to_end(key)
        return stored.astype(np.int64)

    def _remember(self, key: str, stored: np.ndarray) -> None:
        if self.max_entries <= 0:
            return
        self._memory[key] = stored
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def _load(self, key: str, shape) -> Optional[np.ndarray]:
        if not self.cache_dir:
            return None
        path = self.path(key)
        if not os.path.exists(path):
            return None
        try:
            stored = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            logger.warning(f"superpixel cache file {path} is unreadable ({e}); recomputing it")
            return None
        if stored.shape != tuple(shape) or stored.dtype.kind not in "iu":
            logger.warning(
                f"superpixel cache file {path} holds {stored.dtype} {stored.shape}, expected "
                f"integer labels of shape {tuple(shape)}; recomputing it"
            )
            return None
        return stored

    def _save(self, key: str, stored: np.ndarray) -> None:
        if not self.cache_dir:
            return
        os.makedirs(self.cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, stored, allow_pickle=False)
            os.replace(tmp, self.path(key))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
