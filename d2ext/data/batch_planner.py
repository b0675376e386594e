"""One rank's batches, planned as lists of global positions before any image is read.

Rank r of W takes the positions k ≡ r (mod W) in increasing order (the share
detectron2's samplers give a rank). Without aspect-ratio grouping a batch is
the next B of them. With grouping (detectron2's ``AspectRatioGroupedDataset``:
two buckets, w > h and w <= h; a bucket becomes a batch when it holds B) the
bucket of a position follows from the original width and height of its dataset
dict, which is what detectron2 groups on (the mapper keeps the original size).
Planning on dataset indices rather than mapped samples lets every process —
each DataLoader worker, and rank 0 for the other ranks' checkpoint state —
compute the same batches without mapping anything.

State between batches: ``next_position`` (the next position to pull) and
``pending`` (positions waiting in the buckets, bucket by bucket, each in
arrival order). Re-fed in that order before ``next_position``, the pending
positions rebuild the same buckets: none fills up again, as each bucket held
fewer than B, and buckets do not interact.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, List, Optional, Sequence

import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["BatchPlanner", "Orientations", "LANDSCAPE", "PORTRAIT"]

LANDSCAPE, PORTRAIT = 0, 1  # detectron2's bucket ids: 0 if w > h else 1
_UNKNOWN = -1
_EXIF_ORIENTATION = 0x0112  # values 5-8 transpose the image (detectron2's read_image applies them)


def _bucket(width: int, height: int) -> int:
    return LANDSCAPE if width > height else PORTRAIT


def _bucket_from_file(file_name: str) -> int:
    with PathManager.open(file_name, "rb") as f:
        image = Image.open(f)  # reads the header only
        width, height = image.size
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION)
        except Exception:  # detectron2 ignores unreadable EXIF as well
            orientation = None
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return _bucket(width, height)


class Orientations:
    """The bucket id (LANDSCAPE / PORTRAIT) of every dataset index.

    From the dict's ``width`` / ``height`` where present (the mapper checks the
    image against them); otherwise (e.g. ``load_sem_seg`` dicts) from the image
    file's header, read once per index when first needed.
    """

    def __init__(self, dataset_dicts: Sequence[dict]):
        self._buckets = np.array(
            [_bucket(d["width"], d["height"]) if "width" in d and "height" in d else _UNKNOWN for d in dataset_dicts],
            dtype=np.int8,
        )
        unknown = np.flatnonzero(self._buckets == _UNKNOWN)
        self._files = {int(i): dataset_dicts[i]["file_name"] for i in unknown}

    def __call__(self, index: int) -> int:
        bucket = int(self._buckets[index])
        if bucket == _UNKNOWN:
            bucket = self._buckets[index] = _bucket_from_file(self._files[index])
        return bucket


class BatchPlanner:
    """Batches of one rank as lists of global positions.

    Args:
        order: position -> dataset index (a ``DataOrder``).
        orientation: dataset index -> bucket id, or None for no aspect-ratio grouping.
        rank, world_size: this rank takes positions k ≡ rank (mod world_size).
        batch_size: B, the per-rank batch size.
        next_position, pending: a state from :meth:`state_dict` (default: the start).
    """

    def __init__(
        self,
        order: Callable[[int], int],
        orientation: Optional[Callable[[int], int]],
        *,
        rank: int,
        world_size: int,
        batch_size: int,
        next_position: Optional[int] = None,
        pending: Sequence[int] = (),
    ):
        if next_position is None:
            next_position = rank
        if next_position % world_size != rank:
            raise ValueError(f"position {next_position} is not rank {rank}'s share of {world_size}")
        self._order, self._orientation = order, orientation
        self._world_size, self._batch_size = world_size, batch_size
        self._next = int(next_position)
        self._queue = deque(int(k) for k in pending)  # re-fed before next_position
        self._buckets: tuple = ([], [])

    def _pull(self) -> int:
        if self._queue:
            return self._queue.popleft()
        position = self._next
        self._next += self._world_size
        return position

    def next_batch(self) -> List[int]:
        """The positions of the next batch, (B,) in the order their samples are yielded."""
        if self._orientation is None:
            return [self._pull() for _ in range(self._batch_size)]
        while True:
            position = self._pull()
            bucket = self._buckets[self._orientation(self._order[position])]
            bucket.append(position)
            if len(bucket) == self._batch_size:
                batch = bucket[:]
                bucket.clear()
                return batch

    def state_dict(self) -> dict:
        """{"next_position": int, "pending": list[int]}: continuing from it gives the same batches."""
        pending = [*self._buckets[0], *self._buckets[1], *self._queue]
        return {"next_position": self._next, "pending": pending}
