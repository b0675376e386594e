"""The methods: one package per method, each registering its components on import.

``add_project_configs`` adds every project's config keys (each under its own
namespace) so that any config file of any project loads with ``d2ext.get_cfg()``.
"""
from __future__ import annotations

from typing import Callable, List

import d2ext  # noqa: F401  (compat must run before any project imports detectron2)

# Each project appends its add_<method>_config here when it is imported.
CONFIG_ADDERS: List[Callable] = []


def add_project_configs(cfg) -> None:
    for add in CONFIG_ADDERS:
        add(cfg)
