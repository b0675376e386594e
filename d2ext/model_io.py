"""What each meta-architecture needs from the data and what it returns.

The mapper asks which targets to build and the evaluator factory asks which
outputs to evaluate, both from the config alone. Projects declare their
meta-architectures here when they are imported (``register_model_io``).
"""
from __future__ import annotations

from typing import Callable, Dict, FrozenSet, NamedTuple


class ModelIO(NamedTuple):
    targets: Callable[[object], FrozenSet[str]]  # cfg -> training targets to build
    outputs: Callable[[object], FrozenSet[str]]  # cfg -> keys of inference outputs


_MODEL_IO: Dict[str, ModelIO] = {}


def register_model_io(meta_arch: str, targets: Callable, outputs: Callable) -> None:
    _MODEL_IO[meta_arch] = ModelIO(targets, outputs)


def _lookup(cfg) -> ModelIO:
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in _MODEL_IO:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE={name!r} has not declared its inputs and outputs; "
            f"known: {sorted(_MODEL_IO)}. Call d2ext.model_io.register_model_io for it, "
            "or set D2EXT.TARGETS explicitly."
        )
    return _MODEL_IO[name]


def model_targets(cfg) -> FrozenSet[str]:
    """Training targets the common mapper must build for this config."""
    if cfg.D2EXT.TARGETS:
        return frozenset(cfg.D2EXT.TARGETS)
    return _lookup(cfg).targets(cfg)


def model_outputs(cfg) -> FrozenSet[str]:
    """Keys the model returns at inference: subset of {instances, sem_seg, panoptic_seg}."""
    return _lookup(cfg).outputs(cfg)


# detectron2's own meta-architectures, the baselines.
register_model_io(
    "GeneralizedRCNN",
    targets=lambda cfg: frozenset({"instances"}),
    outputs=lambda cfg: frozenset({"instances"}),
)
register_model_io(
    "SemanticSegmentor",
    targets=lambda cfg: frozenset({"sem_seg"}),
    outputs=lambda cfg: frozenset({"sem_seg"}),
)
register_model_io(
    "PanopticFPN",
    targets=lambda cfg: frozenset({"instances", "sem_seg"}),
    outputs=lambda cfg: frozenset({"instances", "sem_seg", "panoptic_seg"}),
)
