"""The methods: one package per method, each registering its components on import.

Importing ``projects`` imports every method package below it, so that their
meta-architectures, heads and config keys are known. ``add_project_configs``
adds every project's keys (each under its own namespace) so that any config
file of any project loads with ``d2ext.get_cfg()``.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, List

import d2ext  # noqa: F401  (compat must run before any project imports detectron2)

# Each project appends its add_<method>_config here when it is imported.
CONFIG_ADDERS: List[Callable] = []


def add_project_configs(cfg) -> None:
    for add in CONFIG_ADDERS:
        add(cfg)


for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.ispkg:
        importlib.import_module(f"{__name__}.{_module.name}")
