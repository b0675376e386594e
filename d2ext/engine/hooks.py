"""Trainer hooks contributed by projects, per meta-architecture.

A method that needs per-step work outside the optimizer (R2O's momentum
encoder and its K schedule, say) registers a factory for its
meta-architecture; the one ``Trainer`` builds the hooks of the configured
``MODEL.META_ARCHITECTURE`` and places them right after detectron2's
``LRScheduler`` hook (so they see this step's learning rate and run before
evaluation, checkpointing and logging)::

    from d2ext.engine import register_hooks

    register_hooks("R2O", lambda cfg, trainer: [MomentumUpdate(cfg)])

State across ``--resume``: a hook either derives its state from
``trainer.iter`` or implements ``state_dict`` / ``load_state_dict``
(detectron2's ``HookBase`` protocol); the trainer's checkpoint carries it
under ``"hooks"``, keyed by the hook's class name (which must therefore be
unique among a run's stateful hooks).
"""
from __future__ import annotations

from typing import Callable, List

from detectron2.engine import HookBase, hooks

from d2ext.registry import NamedRegistry

__all__ = ["HOOK_FACTORIES", "HookFactory", "build_project_hooks", "insert_after_lr_scheduler", "register_hooks"]

# (cfg, trainer) -> hooks; trainer is the d2ext Trainer (reach the model as trainer.model).
HookFactory = Callable[[object, object], List[HookBase]]

HOOK_FACTORIES: NamedRegistry[HookFactory] = NamedRegistry(
    "D2EXT_TRAINER_HOOKS",
    hint="A project registers its hooks with d2ext.engine.register_hooks.",
)


def register_hooks(meta_arch: str, factory: HookFactory) -> HookFactory:
    """Every training run of ``meta_arch`` gets ``factory(cfg, trainer)``'s hooks."""
    return HOOK_FACTORIES.register(meta_arch, factory)


def build_project_hooks(cfg, trainer) -> List[HookBase]:
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in HOOK_FACTORIES:
        return []
    made = list(HOOK_FACTORIES.get(name)(cfg, trainer))
    for hook in made:
        if not isinstance(hook, HookBase):
            raise TypeError(
                f"the trainer hooks registered for {name!r} returned {type(hook).__name__}; "
                "expected detectron2.engine.HookBase instances"
            )
    return made


def insert_after_lr_scheduler(base: List[HookBase], extra: List[HookBase]) -> List[HookBase]:
    """``base`` with ``extra`` right after its LRScheduler hook (at the front if it has none)."""
    position = next((i + 1 for i, h in enumerate(base) if isinstance(h, hooks.LRScheduler)), 0)
    return base[:position] + list(extra) + base[position:]
