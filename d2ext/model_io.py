"""What each meta-architecture needs from the data, what it returns, and what prompts it takes.

The mapper asks which targets to build and which prompts to carry, and the
evaluator factory asks which outputs to evaluate, all from the config alone.
Projects declare their meta-architectures here when they are imported
(:func:`register_model_io`).

Prompts are per-image inputs a model takes at inference besides the image,
given in original-image coordinates and transformed by the test mapper with
the image's geometry (see :data:`PROMPTS`).
"""
from __future__ import annotations

from typing import Callable, FrozenSet, NamedTuple, Optional

from d2ext.registry import NamedRegistry

__all__ = [
    "ModelIO",
    "MODEL_IO",
    "PROMPTS",
    "model_outputs",
    "model_prompts",
    "model_targets",
    "model_train_augmentations",
    "register_model_io",
]

# Prompt name -> what it holds, as a dataset dict / input dict carries it.
PROMPTS = {
    # (N, 2) float xy, in pixels of the original image (x right, y down; the
    # centre of the top-left pixel is (0.5, 0.5), detectron2's box convention).
    # In the model's input dict: the same points in the resized (and flipped)
    # image's pixels, an (N, 2) float32 tensor.
    "points": "(N, 2) xy in original-image pixels",
}


def _none(cfg) -> FrozenSet[str]:
    return frozenset()


def _common_augmentations(cfg) -> None:
    return None


class ModelIO(NamedTuple):
    targets: Callable[[object], FrozenSet[str]]  # cfg -> training targets to build
    outputs: Callable[[object], FrozenSet[str]]  # cfg -> keys of inference outputs
    prompts: Callable[[object], FrozenSet[str]] = _none  # cfg -> inference prompts accepted
    # cfg -> the training augmentations, or None for the common ones from INPUT.*
    # (d2ext.data.augmentations.build_augmentations)
    train_augmentations: Callable[[object], Optional[list]] = _common_augmentations


MODEL_IO: NamedRegistry[ModelIO] = NamedRegistry(
    "D2EXT_MODEL_IO",
    hint="Call d2ext.model_io.register_model_io for it, or set D2EXT.TARGETS explicitly.",
)


def register_model_io(
    meta_arch: str,
    targets: Callable,
    outputs: Callable,
    prompts: Callable = _none,
    train_augmentations: Callable = _common_augmentations,
) -> ModelIO:
    """Declares a meta-architecture's model I/O; each argument is a function of cfg.

    Args:
        targets: -> names of the common mapper's target builders it trains on.
        outputs: -> subset of {"instances", "sem_seg", "panoptic_seg"} it returns.
        prompts: -> names from :data:`PROMPTS` it accepts at inference.
        train_augmentations: -> a list of detectron2 augmentations for the
            training mapper (for recipes INPUT.* cannot express, e.g. large-scale
            jitter), or None for the common ones.
    """
    return MODEL_IO.register(meta_arch, ModelIO(targets, outputs, prompts, train_augmentations))


def _lookup(cfg) -> ModelIO:
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in MODEL_IO:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE={name!r} has not declared its inputs and outputs; "
            f"known: {MODEL_IO.names()}. Call d2ext.model_io.register_model_io for it, "
            "or set D2EXT.TARGETS explicitly."
        )
    return MODEL_IO.get(name)


def model_targets(cfg) -> FrozenSet[str]:
    """Training targets the common mapper must build for this config."""
    if cfg.D2EXT.TARGETS:
        return frozenset(cfg.D2EXT.TARGETS)
    return _lookup(cfg).targets(cfg)


def model_outputs(cfg) -> FrozenSet[str]:
    """Keys the model returns at inference: subset of {instances, sem_seg, panoptic_seg}."""
    return _lookup(cfg).outputs(cfg)


def model_prompts(cfg) -> FrozenSet[str]:
    """Prompts the model accepts at inference (e.g. {"points"}); empty for most models."""
    prompts = frozenset(_lookup(cfg).prompts(cfg))
    unknown = prompts - set(PROMPTS)
    if unknown:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r} declares unknown prompts "
            f"{sorted(unknown)}; known: {sorted(PROMPTS)}"
        )
    return prompts


def model_train_augmentations(cfg) -> Optional[list]:
    """The model's own training augmentations, or None: the common mapper's from
    INPUT.* (also for a meta-architecture that declared nothing)."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in MODEL_IO:
        return None
    return MODEL_IO.get(name).train_augmentations(cfg)


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
