"""Export a built model to ONNX or TorchScript for one input size, with a metadata file.

    meta = export_model(model, image, "output/export/icnet", fmt="onnx", method="tracing",
                        task="sem_seg", cfg=cfg)
    # output/export/icnet/model.onnx + export.json (what load_exported reads)

The model should be in eval mode with its batch norms folded
(``d2ext.layers.fold_batch_norms``); ``tools/export_model.py`` does both.
Every shape is fixed at export time (see :mod:`d2ext.deploy.static_ops`): the
exported graph takes exactly the sample's size, which export.json records.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from .adapters import (
    INSTANCE_OUTPUT_NAMES,
    SemanticSegAdapter,
    UnsupportedModelError,
    check_instance_outputs,
    instance_adapter,
)
from .static_ops import static_export_ops

__all__ = ["FORMATS", "METHODS", "TASKS", "ExportError", "default_task", "export_model", "METADATA_FILE"]

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
METHODS = ("tracing", "scripting")
TASKS = ("sem_seg", "instances")
METADATA_FILE = "export.json"
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
DEFAULT_OPSET = 17  # GridSample (PointRend) needs >= 16; RoiAlign half_pixel >= 16


class ExportError(RuntimeError):
    """Export failed; the message names the model, the format and method, and the cause."""


def default_task(cfg) -> str:
    """"sem_seg" if the config's model outputs it, else "instances"."""
    from d2ext.model_io import model_outputs

    outputs = model_outputs(cfg)
    for task in TASKS:
        if task in outputs:
            return task
    raise UnsupportedModelError(
        f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r} outputs {sorted(outputs)}: "
        f"nothing exportable (one of {TASKS})"
    )


def _adapter(model: nn.Module, image: torch.Tensor, task: str) -> Tuple[nn.Module, Tuple[torch.Tensor, ...], Tuple[str, ...]]:
    """(module to export, its example inputs, output names)."""
    if task == "sem_seg":
        return SemanticSegAdapter(model).eval(), (image[None],), ("sem_seg",)
    if task == "instances":
        adapter = instance_adapter(model, image)
        return adapter, tuple(adapter.flattened_inputs), INSTANCE_OUTPUT_NAMES
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _script(module: nn.Module, what: str) -> torch.jit.ScriptModule:
    try:
        return torch.jit.script(module)
    except Exception as e:  # TorchScript's frontend raises many types
        raise ExportError(
            f"{what}: torch.jit.script failed, use --export-method tracing. "
            f"First lines of the cause: {' '.join(str(e).split())[:600]}"
        ) from e


def export_model(
    model: nn.Module,
    image: torch.Tensor,
    output_dir: str,
    *,
    fmt: str = "onnx",
    method: str = "tracing",
    task: str = "sem_seg",
    opset: int = DEFAULT_OPSET,
    extra_metadata: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Exports ``model`` for inputs shaped like ``image`` and writes export.json beside it.

    Args:
        model: an eval-mode detectron2 model.
        image: (3, H, W) float32 raw pixels (see :mod:`d2ext.deploy.adapters`); the
            exported graph takes (1, 3, H, W) for "sem_seg", (3, H, W) for "instances".
        fmt: "onnx" (legacy TorchScript-based exporter, ``dynamo=False``) or "torchscript".
        method: "tracing", or "scripting" (torch.jit.script of the adapter first).
        extra_metadata: merged into export.json (config file, classes, ...).

    Returns:
        the metadata written to ``output_dir/export.json``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if method not in METHODS:
        raise ValueError(f"export method must be one of {METHODS}, got {method!r}")
    if model.training:
        raise ValueError("export_model needs an eval-mode model (call model.eval())")
    what = f"{type(model).__name__} ({task}) to {fmt} by {method}"
    module, inputs, output_names = _adapter(model, image.float(), task)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MODEL_FILES[fmt])
    with torch.no_grad(), static_export_ops(), warnings.catch_warnings():
        # shapes read as Python ints are the point of a fixed-size export
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        reference = module(*inputs)
        if task == "instances":
            check_instance_outputs(reference)
        if method == "scripting":
            module = _script(module, what)
        try:
            if fmt == "onnx":
                torch.onnx.export(
                    module, inputs, path, dynamo=False, opset_version=opset,
                    input_names=["image"], output_names=list(output_names),
                    do_constant_folding=True,
                )
            elif method == "tracing":
                traced = torch.jit.trace(module, inputs, check_trace=False)
                traced.save(path)
            else:
                module.save(path)
        except UnsupportedModelError:
            raise
        except Exception as e:
            raise ExportError(f"{what} failed: {type(e).__name__}: {' '.join(str(e).split())[:800]}") from e
    meta: Dict[str, Any] = {
        "format": fmt,
        "export_method": method,
        "task": task,
        "file": MODEL_FILES[fmt],
        "meta_architecture": type(model).__name__,
        "input_name": "image",
        "input_shape": list(inputs[0].shape),
        "input_dtype": "float32",
        "input_values": "raw pixels in [0, 255], not normalized (normalization is in the graph)",
        "output_names": list(output_names),
        "opset": opset if fmt == "onnx" else None,
        "torch_version": torch.__version__,
    }
    meta.update(extra_metadata or {})
    with open(os.path.join(output_dir, METADATA_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    logger.info("Exported %s to %s (input %s)", what, path, meta["input_shape"])
    return meta
