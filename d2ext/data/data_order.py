"""The training stream's dataset index at every global position k = 0, 1, 2, ...

detectron2's training samplers yield an infinite index stream from one
generator that runs through all epochs, so the stream cannot be entered in the
middle. Here epoch e is computed from a generator seeded by (seed, e) alone, so
the index at any position is known without replaying what came before it:

- ``TrainingSampler``: epoch e is a permutation of all N indices;
- ``RandomSubsetTrainingSampler``: a seeded subset of ``int(N * ratio)`` indices,
  permuted anew every epoch;
- ``RepeatFactorTrainingSampler``: every index repeated by its repeat factor,
  stochastically rounded per epoch (so epochs differ in length), then permuted.

The epochs follow each other: position k lies in epoch e when
start(e) <= k < start(e) + len(e).
"""
from __future__ import annotations

import bisect
import logging
from typing import List, Optional

import torch
from detectron2.data.samplers import RepeatFactorTrainingSampler

from d2ext.seeding import Stream, derive_seed

__all__ = ["DataOrder", "data_order_from_config", "SUPPORTED_SAMPLERS"]

SUPPORTED_SAMPLERS = ("TrainingSampler", "RepeatFactorTrainingSampler", "RandomSubsetTrainingSampler")
logger = logging.getLogger(__name__)


def _generator(seed: int, stream: Stream, *counters: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, stream, *counters))
    return g


class DataOrder:
    """Position -> dataset index of one run (same on every rank and every DataLoader worker).

    Args:
        size: N, the number of dataset dicts.
        seed: the run's seed.
        repeat_factors: (N,) float repeat factors (``RepeatFactorTrainingSampler``), or None.
        subset_size: the number of indices of a random subset (``RandomSubsetTrainingSampler``), or None.
        shuffle: permute each epoch (detectron2's samplers' ``shuffle``).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        *,
        repeat_factors: Optional[torch.Tensor] = None,
        subset_size: Optional[int] = None,
        shuffle: bool = True,
    ):
        if size <= 0:
            raise ValueError(f"the training dataset is empty (DATASETS.TRAIN): {size} dicts")
        if repeat_factors is not None and subset_size is not None:
            raise ValueError("repeat_factors and subset_size are different samplers; give one")
        self.size, self.seed, self.shuffle = int(size), int(seed), shuffle
        self._repeat_factors = None if repeat_factors is None else repeat_factors.to(torch.float64)
        if self._repeat_factors is not None and len(self._repeat_factors) != size:
            raise ValueError(f"{len(self._repeat_factors)} repeat factors for {size} dicts")
        self._subset = None
        if subset_size is not None:
            if not 0 < subset_size <= size:
                raise ValueError(f"subset of {subset_size} out of {size} dicts (DATALOADER.RANDOM_SUBSET_RATIO)")
            perm = torch.randperm(size, generator=_generator(self.seed, Stream.DATA_SUBSET))
            self._subset = perm[:subset_size]
        if self._subset is not None:
            self.kind = "RandomSubsetTrainingSampler"
        else:
            self.kind = "TrainingSampler" if self._repeat_factors is None else "RepeatFactorTrainingSampler"
        self._starts: List[int] = [0]  # start(e) of every epoch whose length is known, and one past
        self._cache: dict = {}  # epoch -> its index list; the two most recent epochs

    def with_seed(self, seed: int) -> "DataOrder":
        """The same sampling with another seed (a resumed run takes the checkpoint's)."""
        return DataOrder(
            self.size,
            seed,
            repeat_factors=self._repeat_factors,
            subset_size=None if self._subset is None else len(self._subset),
            shuffle=self.shuffle,
        )

    def _epoch_base(self, epoch: int, g: torch.Generator) -> torch.Tensor:
        if self._subset is not None:
            return self._subset
        if self._repeat_factors is None:
            return torch.arange(self.size)
        # detectron2's stochastic rounding: repeat floor(r) times, once more with probability frac(r)
        whole = torch.trunc(self._repeat_factors)
        counts = whole + (torch.rand(self.size, generator=g, dtype=torch.float64) < self._repeat_factors - whole)
        return torch.repeat_interleave(torch.arange(self.size), counts.to(torch.int64))

    def epoch_indices(self, epoch: int) -> List[int]:
        """The dataset indices of epoch ``epoch``, in stream order."""
        if epoch not in self._cache:
            g = _generator(self.seed, Stream.DATA_ORDER, epoch)
            base = self._epoch_base(epoch, g)
            indices = base[torch.randperm(len(base), generator=g)] if self.shuffle else base
            if len(self._cache) >= 2:
                del self._cache[min(self._cache)]
            self._cache[epoch] = indices.tolist()
        return self._cache[epoch]

    def _epoch_length(self, epoch: int) -> int:
        if self._repeat_factors is None:
            return self.size if self._subset is None else len(self._subset)
        return len(self.epoch_indices(epoch))

    def locate(self, position: int) -> tuple:
        """(epoch, offset in that epoch) of a global position."""
        if position < 0:
            raise IndexError(f"position {position} < 0")
        if self._repeat_factors is None:
            return divmod(position, self._epoch_length(0))
        while self._starts[-1] <= position:
            self._starts.append(self._starts[-1] + self._epoch_length(len(self._starts) - 1))
        epoch = bisect.bisect_right(self._starts, position) - 1
        return epoch, position - self._starts[epoch]

    def __getitem__(self, position: int) -> int:
        epoch, offset = self.locate(position)
        return self.epoch_indices(epoch)[offset]


def data_order_from_config(cfg, dataset_dicts: list, seed: int) -> DataOrder:
    """The DataOrder of ``cfg.DATALOADER.SAMPLER_TRAIN`` on these (already filtered) dicts."""
    name = cfg.DATALOADER.SAMPLER_TRAIN
    logger.info(f"Using training sampler {name} (resumable data order, seed {seed})")
    if name == "TrainingSampler":
        return DataOrder(len(dataset_dicts), seed)
    if name == "RepeatFactorTrainingSampler":
        # detectron2 after 0.6 added DATALOADER.REPEAT_SQRT (and the sqrt argument)
        kwargs = {"sqrt": cfg.DATALOADER.REPEAT_SQRT} if "REPEAT_SQRT" in cfg.DATALOADER else {}
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD, **kwargs
        )
        return DataOrder(len(dataset_dicts), seed, repeat_factors=factors)
    if name == "RandomSubsetTrainingSampler":
        if "RANDOM_SUBSET_RATIO" not in cfg.DATALOADER:  # 0.6's loader names the key but lacks it
            raise ValueError(
                "DATALOADER.SAMPLER_TRAIN=RandomSubsetTrainingSampler needs DATALOADER.RANDOM_SUBSET_RATIO, "
                "which this detectron2's config does not define"
            )
        ratio = cfg.DATALOADER.RANDOM_SUBSET_RATIO
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"DATALOADER.RANDOM_SUBSET_RATIO={ratio} must be in (0, 1]")
        return DataOrder(len(dataset_dicts), seed, subset_size=int(len(dataset_dicts) * ratio))
    raise ValueError(
        f"DATALOADER.SAMPLER_TRAIN={name!r} is not supported by d2ext's resumable loader "
        f"(supported: {', '.join(SUPPORTED_SAMPLERS)}); set D2EXT.RESUMABLE_DATA False to use "
        "detectron2's loader, whose data order restarts on resume"
    )
