"""Data: datasets (builtin, toy, yours), the one common mapper, its augmentations and targets.

Importing registers detectron2's dataset names with d2ext's validating loaders
under ``$DETECTRON2_DATASETS`` (default ``./datasets``); nothing is read from
disk until a dataset is used.
"""
from .datasets import *  # noqa: F401,F403
from .datasets import __all__ as _datasets_all
from .datasets import register_all_builtin
from .mapper import CommonDatasetMapper
from .targets import TargetContext, register_target

register_all_builtin()

__all__ = [*_datasets_all, "CommonDatasetMapper", "TargetContext", "register_target"]
