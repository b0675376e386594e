"""Deployment: export to ONNX / TorchScript for a fixed input size, and run the export.

- :mod:`.adapters`: tensor-in, tensor-out views of the models (what is exported)
- :mod:`.static_ops`: static-shape padding and adaptive pooling used while exporting
- :mod:`.export`: ``export_model`` -> model.onnx / model.ts + export.json
- :mod:`.runtime`: ``load_exported`` runs it on ONNX Runtime (CPU, CUDA EP) or TorchScript

onnx / onnxruntime are imported only when an ONNX model is exported or run.
"""
from .adapters import INSTANCE_OUTPUT_NAMES, SemanticSegAdapter, UnsupportedModelError, instance_adapter
from .export import FORMATS, METHODS, TASKS, ExportError, default_task, export_model
from .runtime import ExportedModel, default_providers, instances_from_outputs, load_exported
from .static_ops import static_export_ops

__all__ = [
    "FORMATS", "METHODS", "TASKS", "INSTANCE_OUTPUT_NAMES", "ExportError", "ExportedModel",
    "SemanticSegAdapter", "UnsupportedModelError", "default_providers", "default_task", "export_model",
    "instance_adapter", "instances_from_outputs", "load_exported", "static_export_ops",
]
