"""Run an exported model (d2ext.deploy.export_model's folder) with ONNX Runtime or TorchScript.

    model = load_exported("output/export/icnet")        # reads export.json
    logits = model(image[None])["sem_seg"]               # (1, K, H, W) torch tensor
    inst = instances_from_outputs(model(image), 512, 1024)  # instance exports

ONNX Runtime uses the CUDA execution provider when the installed onnxruntime
has it and a GPU is present, else the CPU one (``providers`` overrides).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .export import METADATA_FILE

__all__ = ["ExportedModel", "default_providers", "instances_from_outputs", "load_exported"]

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]


def default_providers() -> List[str]:
    """CUDA first where onnxruntime offers it (onnxruntime-gpu with a GPU), then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if torch.cuda.is_available() else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


class ExportedModel:
    """Callable: inputs shaped as export.json's ``input_shape`` -> {output name: tensor}."""

    def __init__(self, directory: str, *, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None):
        meta_path = os.path.join(directory, METADATA_FILE)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(f"{meta_path}: no such file (is {directory!r} an export folder "
                                    "written by tools/export_model.py?)")
        with open(meta_path) as f:
            self.meta: Dict[str, Any] = json.load(f)
        self.path = os.path.join(directory, self.meta["file"])
        self.input_shape = tuple(self.meta["input_shape"])
        self.output_names: List[str] = list(self.meta["output_names"])
        if self.meta["format"] == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
            self.providers = list(providers) if providers else default_providers()
            self._session = ort.InferenceSession(self.path, options, providers=self.providers)
            self.backend = "onnxruntime"
            self.providers = self._session.get_providers()
        else:
            self._module = torch.jit.load(self.path, map_location="cpu")
            self.backend = "torchscript"
            self.providers = []

    def _check(self, image: ArrayLike) -> None:
        if tuple(image.shape) != self.input_shape:
            raise ValueError(
                f"{self.path} was exported for inputs of shape {list(self.input_shape)} "
                f"(export.json input_shape), got {list(image.shape)}: resize the image, or "
                "export again with a --sample-image / --input-size of this size"
            )

    def __call__(self, image: ArrayLike) -> Dict[str, torch.Tensor]:
        """image: float32 raw pixels, ``input_shape``. Returns CPU tensors (ORT) or the
        module's tensors (TorchScript), keyed by ``output_names``."""
        self._check(image)
        if self.backend == "onnxruntime":
            array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image
            outputs = self._session.run(None, {self.meta["input_name"]: np.ascontiguousarray(array, np.float32)})
            return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outputs)}
        tensor = image if isinstance(image, torch.Tensor) else torch.from_numpy(image)
        with torch.no_grad():
            outputs = self._module(tensor.float())
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return dict(zip(self.output_names, outputs))


def load_exported(directory: str, **kwargs) -> ExportedModel:
    return ExportedModel(directory, **kwargs)


def instances_from_outputs(outputs: Dict[str, torch.Tensor], height: int, width: int, mask_threshold: float = 0.5):
    """An instance export's outputs -> detectron2 ``Instances`` at (height, width), masks
    pasted into the image as the eager model's ``detector_postprocess`` does."""
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import Boxes, Instances

    image_size = tuple(int(v) for v in outputs["image_size"].tolist())
    inst = Instances(image_size)
    inst.pred_boxes = Boxes(outputs["pred_boxes"])
    inst.pred_classes = outputs["pred_classes"]
    inst.scores = outputs["scores"]
    inst.pred_masks = outputs["pred_masks"]
    return detector_postprocess(inst, height, width, mask_threshold)
