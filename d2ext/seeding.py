"""Counter-based seeds: each random stream of a run derived from (run seed, purpose, counters).

detectron2 seeds ``random``, ``numpy.random`` and torch once per process and lets
one stream run through the whole training, so what an iteration draws depends
on everything drawn before it: by every earlier augmentation, by a hook (an
evaluation's DataLoader draws its base seed from torch's global generator), and
by where a killed run was resumed. d2ext instead reseeds from a seed derived
from the run's seed and a counter — the data position k for an augmentation,
the iteration (and rank) for a training step — so the numbers drawn there
depend on that counter alone.
"""
from __future__ import annotations

import contextlib
import enum
import random
from typing import Iterator

import numpy as np
import torch

__all__ = ["Stream", "derive_seed", "preserved_global_rngs", "seed_global_rngs"]


class Stream(enum.IntEnum):
    """The purpose of a derived seed; streams of different purposes never share seeds."""

    DATA_ORDER = 1  # counters: (epoch,) -> the epoch's permutation / repeat rounding
    DATA_SUBSET = 2  # counters: () -> RandomSubsetTrainingSampler's subset
    AUGMENTATION = 3  # counters: (position,) -> the mapper's randomness for that position
    MAPPER_RETRY = 4  # counters: (position, attempt) -> a substitute when the mapper returns None
    TRAINING_STEP = 5  # counters: (iteration, rank) -> the model's randomness in that step


def derive_seed(seed: int, stream: Stream, *counters: int) -> int:
    """A 64-bit seed, well mixed (numpy's SeedSequence), from the run seed, a purpose and counters."""
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(stream), *map(int, counters)))
    return int(sequence.generate_state(1, np.uint64)[0])


def seed_global_rngs(seed: int, cuda: bool = True) -> None:
    """Seeds python's ``random``, ``numpy.random`` and torch's CPU generator (and CUDA's if ``cuda``).

    ``seed`` is a 64-bit value; numpy's legacy seeding takes it as two 32-bit words.
    A mapper runs on CPU, so data seeding leaves the CUDA generators alone.
    """
    random.seed(seed)
    np.random.seed(np.array([seed & 0xFFFFFFFF, seed >> 32], dtype=np.uint32))
    if cuda:
        torch.manual_seed(seed)  # also every CUDA device's generator
    else:
        torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def preserved_global_rngs() -> Iterator[None]:
    """Restores python's, numpy's and torch's CPU generator states on exit.

    For work done in the training process that must not shift the model's
    random stream (mapping a sample when DataLoader workers are off).
    """
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
