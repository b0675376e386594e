"""Evaluation: ``build_evaluator(cfg, dataset_name)`` and d2ext's own Cityscapes
evaluators on cityscapesscripts (no Meta-internal modules)."""
from .build import build_evaluator, register_evaluator_type
from .checked_sem_seg import CheckedSemSegEvaluator
from .cityscapes_instance import CityscapesInstanceEvaluator
from .cityscapes_semantic import CityscapesSemSegEvaluator

__all__ = [
    "build_evaluator",
    "register_evaluator_type",
    "CheckedSemSegEvaluator",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
]
