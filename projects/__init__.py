"""d2ext's methods, importable as ``d2ext_projects.<method>`` (this folder is ``projects/``).

``import d2ext_projects`` imports every method package below it, so that
their meta-architectures, heads, config keys and data pieces are registered
with detectron2's and d2ext's registries. d2ext itself never imports this
package: the entry points (``train_net.py``, ``tools/``) do, and an import
error inside a method propagates with its cause.

Why not a top-level ``projects``: the editable install resolves packages
through a finder that comes after the normal path search, so any
``projects/`` folder earlier on ``sys.path`` (detectron2's own source tree, for
one) would shadow a bare ``projects``. detectron2 maps its projects folder to
``detectron2.projects.<name>`` for the same reason.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import List

import d2ext  # noqa: F401  (compat must run before any project imports detectron2)

METHODS: List[str] = [m.name for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name) if m.ispkg]

for _method in METHODS:
    importlib.import_module(f"{__name__}.{_method}")
