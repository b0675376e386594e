"""Adaptations that let detectron2 0.6 (and cityscapesscripts) run on today's numpy, Pillow, setuptools.

Every adaptation here is feature-detected and a no-op where it is not needed
(e.g. on detectron2 built from current source). ``apply()`` runs once when
``d2ext`` is imported, before any detectron2 module that needs it is imported.
Apart from ``d2ext.postprocessing`` (a same-output speed-up of one function),
nothing else in the project patches third-party code.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
import sys
import types
from typing import List

# numpy 1.24 removed these aliases; detectron2 0.6 uses them in polygon
# rasterization, the class histogram, the semantic evaluator and the Visualizer.
_NUMPY_ALIASES = {"float": float, "int": int, "bool": bool, "object": object, "str": str}

APPLIED: List[str] = []


def _numpy_aliases() -> None:
    import numpy as np

    for name, value in _NUMPY_ALIASES.items():
        if name not in np.__dict__:
            setattr(np, name, value)
            APPLIED.append(f"numpy.{name}")


def _numpy_in1d() -> None:
    # numpy 2.4 removed np.in1d; cityscapesscripts 2.3.0's official evaluation
    # calls it (void handling in the instance eval, iIoU in the pixel eval).
    import numpy as np

    if "in1d" not in np.__dict__:

        def in1d(ar1, ar2, assume_unique=False, invert=False, **kwargs):
            return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert, **kwargs)

        np.in1d = in1d
        APPLIED.append("numpy.in1d")


def _pil_linear() -> None:
    # Pillow 10 removed Image.LINEAR; detectron2 0.6 evaluates it as a default
    # argument when detectron2.data.transforms is imported.
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        APPLIED.append("PIL.Image.LINEAR")


class _MissingCompiledOps(types.ModuleType):
    """Stands in for ``detectron2._C`` when detectron2 has no compiled ops.

    Several ``detectron2.layers`` modules import ``_C`` at import time but only
    call it for rotated boxes, deformable convolution and the fast COCO eval,
    none of which d2ext uses. Any call explains itself instead of failing with
    an AttributeError.
    """

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"detectron2._C.{name} is a compiled op, but this detectron2 was installed "
            "without compiled ops (see README, 'About detectron2'). Rotated boxes, "
            "deformable convolution and COCOEvaluator(use_fast_impl=True) need a "
            "detectron2 built from source."
        )


def has_compiled_ops() -> bool:
    mod = sys.modules.get("detectron2._C")
    return mod is not None and not isinstance(mod, _MissingCompiledOps)


def _compiled_ops_stub() -> None:
    if "detectron2._C" in sys.modules:
        return
    if importlib.util.find_spec("detectron2._C") is not None:
        return
    stub = _MissingCompiledOps("detectron2._C")
    # Informational queries (collect_env_info, called by default_setup) get answers.
    stub.get_compiler_version = lambda: "none: detectron2 installed without compiled ops"
    stub.get_cuda_version = lambda: "none"
    stub.has_cuda = lambda: False
    sys.modules["detectron2._C"] = stub
    import detectron2

    detectron2._C = stub
    APPLIED.append("detectron2._C stub")


def _pkg_resources() -> None:
    # detectron2 0.6's model_zoo imports pkg_resources (removed from recent
    # setuptools) only to locate its bundled config files.
    if importlib.util.find_spec("pkg_resources") is not None:
        return
    module = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        return str(importlib.resources.files(package).joinpath(resource))

    module.resource_filename = resource_filename
    sys.modules["pkg_resources"] = module
    APPLIED.append("pkg_resources.resource_filename")


def tracing_adapter() -> type:
    """detectron2's ``TracingAdapter`` (flattens dict / Instances inputs and outputs for tracing).

    detectron2 0.6's ``detectron2.export/__init__`` imports ``caffe2`` (gone from
    torch since 2.0), so nothing in the package imports; its ``flatten`` module
    needs no caffe2 and is then loaded under a bare ``detectron2.export`` package
    (its other modules stay importable by name, except the caffe2 ones). Called
    by d2ext.deploy when it exports, not on ``import d2ext``.
    """
    try:
        from detectron2.export import TracingAdapter

        return TracingAdapter
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("caffe2"):
            raise
    import detectron2

    package = types.ModuleType("detectron2.export")
    package.__path__ = [os.path.join(os.path.dirname(detectron2.__file__), "export")]
    sys.modules["detectron2.export"] = package
    from detectron2.export.flatten import TracingAdapter

    package.TracingAdapter = TracingAdapter
    APPLIED.append("detectron2.export without caffe2")
    return TracingAdapter


def create_local_process_group(num_workers_per_machine: int) -> None:
    """Creates the process group of the ranks on this machine, for ``comm.get_local_rank``.

    detectron2 from current source has ``comm.create_local_process_group``;
    0.6 expects ``launch`` to set the module global ``_LOCAL_PROCESS_GROUP``.
    """
    from detectron2.utils import comm

    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(num_workers_per_machine)
        return
    import torch.distributed as dist

    world_size, rank = dist.get_world_size(), dist.get_rank()
    for machine in range(world_size // num_workers_per_machine):
        ranks = list(range(machine * num_workers_per_machine, (machine + 1) * num_workers_per_machine))
        group = dist.new_group(ranks)  # every rank must take part in every new_group
        if rank in ranks:
            comm._LOCAL_PROCESS_GROUP = group


def apply() -> List[str]:
    """Apply every needed adaptation once; returns the names of those applied."""
    if not getattr(apply, "_done", False):
        _numpy_aliases()
        _numpy_in1d()
        _pil_linear()
        _compiled_ops_stub()
        _pkg_resources()
        apply._done = True
    return list(APPLIED)
