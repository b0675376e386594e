"""Files of the generated toy datasets: hashed writes, the manifest, and first-use generation.

A generated dataset is a folder ``<root>/<name>/`` whose ``MANIFEST.json`` is
written last and lists every other file with its sha256; its presence with the
expected spec (version, seed, counts, ...) means "complete and current".

``ensure_generated`` makes first use safe when several processes start at once
(e.g. the ranks of a distributed run): each writes into a temporary sibling
folder and renames it into place; a process that loses the race discards its
copy, since the winner's is identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, Mapping, TypeVar

import numpy as np
from PIL import Image

__all__ = [
    "MANIFEST",
    "PNG_COMPRESS_LEVEL",
    "Writer",
    "encode_png",
    "ensure_generated",
    "in_order",
    "is_complete",
]

logger = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
PNG_COMPRESS_LEVEL = 6
MAX_THREADS = 8
T = TypeVar("T")


def encode_png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _num_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def in_order(fn: Callable[[int], T], count: int) -> Iterator[T]:
    """``fn(0), fn(1), ..., fn(count - 1)``, computed by a thread pool, yielded in order.

    Scene drawing (numpy) and PNG encoding (zlib) release the GIL, so threads scale
    with the cores; every image has its own random stream, so the bytes do not
    depend on the number of threads. At most a few results per thread wait in memory.
    """
    threads = _num_threads()
    if threads == 1:
        yield from map(fn, range(count))
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="toy-gen") as pool:
        pending: deque = deque()
        for index in range(count):
            pending.append(pool.submit(fn, index))
            if len(pending) >= 4 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class Writer:
    """Writes files under a folder, remembering each one's sha256 for the manifest."""

    def __init__(self, folder: str):
        self.folder = folder
        self.hashes: Dict[str, str] = {}

    def write(self, relpath: str, data: bytes) -> None:
        path = os.path.join(self.folder, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.hashes[relpath] = hashlib.sha256(data).hexdigest()

    def json(self, relpath: str, obj: Any) -> None:
        self.write(relpath, json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def is_complete(folder: str, spec: Mapping[str, Any]) -> bool:
    """Whether ``folder`` holds a manifest whose entries match ``spec``."""
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    return all(manifest.get(k) == v for k, v in spec.items())


def ensure_generated(
    root: str, name: str, spec: Mapping[str, Any], generate: Callable[[str], Any]
) -> str:
    """Returns ``<root>/<name>``, first calling ``generate(tmp_dir)`` unless it is complete.

    ``generate`` writes the dataset (manifest last, with ``spec``'s entries) into
    the folder it is given. An incomplete or outdated copy is moved aside and deleted.
    """
    target = os.path.join(root, name)
    if is_complete(target, spec):
        return target
    logger.info("Generating the %s dataset in %s (first use) ...", name, target)
    os.makedirs(root, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root)
    stale_dir = None
    try:
        generate(tmp_dir)
        if os.path.lexists(target) and not is_complete(target, spec):
            # An older version or an interrupted copy made by hand: move it aside.
            stale_dir = os.path.join(root, f".{name}.stale-{uuid.uuid4().hex}")
            try:
                os.rename(target, stale_dir)
                logger.warning("Replacing %s: it was incomplete or from another version", target)
            except FileNotFoundError:  # another process moved it first
                stale_dir = None
        try:
            os.rename(tmp_dir, target)
        except OSError:
            # Lost the race: another process renamed its (identical) copy into place.
            if not is_complete(target, spec):
                raise
            logger.info("Another process generated %s first; using it", target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if stale_dir is not None:
            shutil.rmtree(stale_dir, ignore_errors=True)
    return target
