"""A training data loader whose place in the stream is part of the checkpoint.

detectron2's training loader restarts its sampler and its workers' random
streams on ``--resume``, so a resumed run sees other images, augmented
differently, than an uninterrupted one. Here everything is keyed by the global
position k = 0, 1, 2, ... of the training stream:

- position -> dataset index: ``d2ext.data.data_order`` (per-epoch permutations
  seeded by (seed, epoch); the samplers of ``DATALOADER.SAMPLER_TRAIN``);
- batches: ``d2ext.data.batch_planner`` (rank r takes k ≡ r mod world size;
  aspect-ratio grouping as detectron2's, planned on indices);
- augmentation: before mapping position k, python's ``random``, ``numpy.random``
  and torch's CPU generator are seeded from (seed, k), wherever k is mapped.

So the samples of a batch depend on nothing but the seed and the loader's state
— not on the number of DataLoader workers, nor on where a run was killed. The
state (:meth:`ResumableTrainLoader.state_dict`) holds every rank's position,
computed on any rank, because detectron2 checkpoints on the main process only.

Workers: an ``IterableDataset`` whose worker w of W maps every W-th sample of
the planned order; torch's DataLoader returns worker outputs round-robin, so the
main process receives them in planned order and checks each position.
"""
from __future__ import annotations

import functools
import logging
import random
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from d2ext.data.batch_planner import BatchPlanner, Orientations
from d2ext.data.data_order import DataOrder, data_order_from_config
from d2ext.seeding import Stream, derive_seed, preserved_global_rngs, seed_global_rngs

__all__ = ["ResumableTrainLoader"]

STATE_VERSION = 1
logger = logging.getLogger(__name__)


class _PositionMapper:
    """position k -> mapped dict, with the global RNGs seeded from (seed, k) first.

    ``isolate``: restore the caller's RNG states afterwards (mapping in the
    training process must not shift the model's random stream).
    """

    def __init__(self, dataset: DatasetFromList, mapper: Callable, order: DataOrder, isolate: bool):
        self.dataset, self.mapper, self.order, self.isolate = dataset, mapper, order, isolate

    def _map(self, position: int) -> dict:
        seed_global_rngs(derive_seed(self.order.seed, Stream.AUGMENTATION, position), cuda=False)
        index = self.order[position]
        data = self.mapper(self.dataset[index])
        attempt = 0
        while data is None:  # detectron2's MapDataset retries with another random index, as here
            attempt += 1
            retry_seed = derive_seed(self.order.seed, Stream.MAPPER_RETRY, position, attempt)
            if attempt >= 3:
                logger.warning(f"the mapper returned None {attempt} times for position {position}")
            index = random.Random(retry_seed).randrange(len(self.dataset))
            seed_global_rngs(retry_seed, cuda=False)
            data = self.mapper(self.dataset[index])
        return data

    def __call__(self, position: int) -> dict:
        if not self.isolate:
            return self._map(position)
        with preserved_global_rngs():
            return self._map(position)


class _PlannedSamples(IterableDataset):
    """(position, mapped dict) in planned order from one planner state; DataLoader worker w
    of W yields the samples w, w + W, w + 2W, ... of that order."""

    def __init__(self, mapping: _PositionMapper, make_planner: Callable[[], BatchPlanner]):
        self.mapping, self.make_planner = mapping, make_planner

    def __iter__(self) -> Iterator[Tuple[int, dict]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        planner = self.make_planner()
        i = 0
        while True:
            for position in planner.next_batch():
                if i % workers == worker:
                    yield position, self.mapping(position)
                i += 1


def _no_collation(sample):
    return sample  # module level: picklable for spawned workers


class _Planners:
    """Makes BatchPlanners of one run (the same order and grouping) from saved states."""

    def __init__(self, order: DataOrder, orientation: Optional[Orientations], world_size: int, batch_size: int):
        self.order, self.orientation = order, orientation
        self.world_size, self.batch_size = world_size, batch_size

    def __call__(self, rank: int, state: dict) -> BatchPlanner:
        return BatchPlanner(
            self.order, self.orientation, rank=rank, world_size=self.world_size, batch_size=self.batch_size, **state
        )


class ResumableTrainLoader:
    """An infinite iterable of training batches, each a list of B mapped dicts (B = total batch / ranks).

    ``iter()`` returns the loader itself (one stream). Nothing is read or started
    before the first ``next()``, which starts from the current state: detectron2
    0.6's SimpleTrainer calls ``iter(data_loader)`` before ``resume_or_load``
    loads the checkpoint, current detectron2 calls it at the first step; both
    continue from the loaded position.
    """

    @configurable
    def __init__(
        self,
        dataset: Sequence[dict],
        *,
        mapper: Callable[[dict], Optional[dict]],
        order: DataOrder,
        total_batch_size: int,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        if total_batch_size <= 0 or total_batch_size % self.world_size:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH={total_batch_size} must be a positive multiple of the "
                f"number of processes ({self.world_size})"
            )
        if len(dataset) != order.size:
            raise ValueError(f"the data order is over {order.size} dicts, the dataset has {len(dataset)}")
        self.batch_size = total_batch_size // self.world_size
        self.num_workers = num_workers
        self.aspect_ratio_grouping = aspect_ratio_grouping
        orientation = Orientations(dataset) if aspect_ratio_grouping else None
        # serialized as detectron2 does: forked workers share the bytes instead of copying dicts
        self._dataset = DatasetFromList(list(dataset), copy=False, serialize=True)
        self._mapper = mapper
        self._planners = _Planners(order, orientation, self.world_size, self.batch_size)
        initial = [{"next_position": r, "pending": []} for r in range(self.world_size)]
        self._restart(initial, batches=0)

    @classmethod
    def from_config(cls, cfg, mapper: Callable, dataset: Optional[Sequence[dict]] = None) -> dict:
        if dataset is None:
            dataset = get_detection_dataset_dicts(
                cfg.DATASETS.TRAIN,
                filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
                min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
                proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
            )
        # SEED < 0: a random seed, as detectron2's samplers pick one; the state saves it for resume
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        return {
            "dataset": dataset,
            "mapper": mapper,
            "order": data_order_from_config(cfg, dataset, seed),
            "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
            "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            "num_workers": cfg.DATALOADER.NUM_WORKERS,
        }

    @property
    def seed(self) -> int:
        """The run's seed: of the data order and of the augmentations (and the trainer's steps)."""
        return self._planners.order.seed

    # -- the stream -----------------------------------------------------------
    def _restart(self, states: List[dict], batches: int) -> None:
        """Continue from ``states`` (one per rank) after ``batches`` batches; workers restart lazily."""
        self._start_states, self._start_batches, self._batches = states, batches, batches
        self._planner = self._planners(self.rank, states[self.rank])
        self._shadows: Dict[int, Tuple[BatchPlanner, int]] = {}  # other ranks' planners, for state_dict
        self._source: Optional[Iterator[Tuple[int, dict]]] = None  # dropping a DataLoader iterator ends its workers

    def _open_source(self) -> Iterator[Tuple[int, dict]]:
        start = self._planner.state_dict()
        isolate = self.num_workers == 0  # mapping in this process: keep the model's RNG untouched
        mapping = _PositionMapper(self._dataset, self._mapper, self._planners.order, isolate)
        samples = _PlannedSamples(mapping, functools.partial(self._planners, self.rank, start))
        if self.num_workers == 0:
            return iter(samples)
        loader = DataLoader(
            samples,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_no_collation,
            # a generator of its own: torch would draw the workers' base seed from the global one
            generator=torch.Generator(),
        )
        return iter(loader)

    def __iter__(self) -> "ResumableTrainLoader":
        return self

    def __next__(self) -> List[dict]:
        if self._source is None:
            logger.info(
                f"Training data starts at position {self._planner.state_dict()['next_position']} "
                f"(rank {self.rank}/{self.world_size}, after {self._batches} batches, seed {self.seed})"
            )
            self._source = self._open_source()
        batch = []
        for position in self._planner.next_batch():
            received, data = next(self._source)
            if received != position:  # the worker round-robin broke: never silently reorder
                raise RuntimeError(f"the data workers yielded position {received}, the plan expected {position}")
            batch.append(data)
        self._batches += 1
        return batch

    # -- checkpoint state -----------------------------------------------------
    def _rank_state(self, rank: int) -> dict:
        if rank == self.rank:
            return self._planner.state_dict()
        planner, done = self._shadows.get(rank) or (self._planners(rank, self._start_states[rank]), 0)
        # every rank yields one batch per iteration, so the others are where this one is
        for _ in range(self._batches - self._start_batches - done):
            planner.next_batch()
        self._shadows[rank] = (planner, self._batches - self._start_batches)
        return planner.state_dict()

    def state_dict(self) -> dict:
        """The stream's position, of every rank.

        Fields: ``version``; ``seed``; ``world_size``, ``batch_size`` (per rank),
        ``dataset_size``, ``sampler``, ``aspect_ratio_grouping`` (what the
        positions mean); ``batches`` (yielded by each rank); ``ranks``: per rank
        {"next_position": int, "pending": list[int]} (see ``BatchPlanner``).
        """
        order = self._planners.order
        return {
            "version": STATE_VERSION,
            "seed": order.seed,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "dataset_size": order.size,
            "sampler": order.kind,
            "aspect_ratio_grouping": self.aspect_ratio_grouping,
            "batches": self._batches,
            "ranks": [self._rank_state(r) for r in range(self.world_size)],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream saved in ``state``: the same batches, in the same order, as without the stop."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data loader state version {state.get('version')}, expected {STATE_VERSION}")
        self._planners.order = self._planners.order.with_seed(state["seed"])
        saved = (state["world_size"], state["batch_size"], state["dataset_size"], state["sampler"],
                 state["aspect_ratio_grouping"])
        now = (self.world_size, self.batch_size, self._planners.order.size, self._planners.order.kind,
               self.aspect_ratio_grouping)
        if saved == now:
            self._restart([dict(s) for s in state["ranks"]], state["batches"])
            return
        # positions of another layout mean other samples: continue after the furthest one
        furthest = max(s["next_position"] for s in state["ranks"])
        first = [furthest + (r - furthest) % self.world_size for r in range(self.world_size)]
        logger.warning(
            "The data loader state was saved for (world size, batch size per rank, dataset size, sampler, "
            f"aspect-ratio grouping) = {saved}, this run has {now}: the data stream continues at position "
            f"{furthest} without the pending samples, not as the saved run would have."
        )
        self._restart([{"next_position": k, "pending": []} for k in first], state["batches"])
