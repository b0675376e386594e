"""ExportedPredictor: the Predictor's interface (BGR image in, detectron2 outputs out) on an export.

The export takes one input size (export.json ``input_shape``): each image is
resized to it (bilinear), run, and the outputs are brought back to the image's
own size (sem_seg resized bilinearly, instance masks pasted), as the eager
model's post-processing does for its own test-time resize.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .runtime import ExportedModel, instances_from_outputs

__all__ = ["ExportedPredictor"]


class ExportedPredictor:
    """Args:
        directory: a tools/export_model.py output folder.
        providers, threads: for ONNX Runtime (see :class:`ExportedModel`).
    """

    def __init__(self, directory: str, *, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None):
        self.model = ExportedModel(directory, providers=providers, threads=threads)
        meta = self.model.meta
        self.task = meta["task"]
        self.input_format = meta.get("input_format", "BGR")
        self.height, self.width = self.model.input_shape[-2:]

    def __call__(self, original_image: np.ndarray, points: Optional[np.ndarray] = None) -> Dict[str, object]:
        """original_image: (H, W, 3) uint8 BGR. Returns {"sem_seg": (K, H, W)} or {"instances"}."""
        if points is not None:
            raise ValueError("an exported model takes no point prompts")
        h, w = original_image.shape[:2]
        image = original_image[:, :, ::-1] if self.input_format == "RGB" else original_image
        if (h, w) != (self.height, self.width):
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        if self.task == "sem_seg":
            logits = self.model(tensor[None])["sem_seg"]
            if (h, w) != (self.height, self.width):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            return {"sem_seg": logits[0]}
        return {"instances": instances_from_outputs(self.model(tensor), h, w)}
