"""AdaptIS: panoptic segmentation from points (Sofiiuk et al., ICCV 2019).

Importing this package registers:

- ``AdaptIS`` in detectron2's META_ARCH_REGISTRY;
- the config keys (``add_adaptis_config``, with ``d2ext.config.register_config``);
- its model I/O in ``d2ext.model_io``: the common mapper's ``segments`` and
  ``sem_seg`` targets, outputs ``panoptic_seg`` / ``instances`` / ``sem_seg``,
  the ``points`` prompt (click-to-segment);
- its trainer hooks (``d2ext.engine.register_hooks``): stage 2 refuses to
  start without MODEL.WEIGHTS and logs its adaptive threshold;
- its class count (``MODEL.ADAPTIS.NUM_CLASSES``) in d2ext's consistency check.
"""
from __future__ import annotations

from d2ext.config import register_config
from d2ext.engine import register_consistency_check, register_hooks
from d2ext.model_io import register_model_io

from .assembly import AssemblyResult, greedy_assembly
from .config import add_adaptis_config
from .hooks import MissingStage1WeightsError, build_adaptis_hooks
from .meta_arch import AdaptIS, class_count_expectations

__all__ = [
    "AdaptIS",
    "AssemblyResult",
    "MissingStage1WeightsError",
    "add_adaptis_config",
    "greedy_assembly",
]

register_config("adaptis", add_adaptis_config)
register_model_io(
    "AdaptIS",
    targets=lambda cfg: frozenset({"segments", "sem_seg"}),
    outputs=lambda cfg: frozenset({"panoptic_seg", "instances", "sem_seg"}),
    prompts=lambda cfg: frozenset({"points"}),
)
register_hooks("AdaptIS", build_adaptis_hooks)
register_consistency_check("MODEL.META_ARCHITECTURE", "AdaptIS", class_count_expectations)
