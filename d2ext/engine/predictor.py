"""Predictor: one image (and optional prompts) in, detectron2's outputs out.

Like detectron2's ``DefaultPredictor`` (weights from ``MODEL.WEIGHTS``, BGR
input flipped to ``INPUT.FORMAT``, test-time resize, outputs at the original
size), but built the way d2ext builds models (``Trainer.build_model``) and
with the common mapper's test-time augmentations, and it passes inference
prompts: ``predictor(image, points=[[x, y], ...])`` for a model that declares
``"points"`` in ``d2ext.model_io``. The points are in pixels of the given
image and are transformed with its resize, exactly as the test mapper does.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import transforms as T

from d2ext.data.augmentations import build_augmentations
from d2ext.data.mapper import transform_points
from d2ext.model_io import MODEL_IO, model_prompts

__all__ = ["Predictor", "PromptError"]


class PromptError(ValueError):
    """A prompt was given to a model that does not accept it."""


def _models_accepting(prompt: str, cfg) -> list:
    accepting = []
    for name, io in MODEL_IO.items():
        try:
            if prompt in io.prompts(cfg):
                accepting.append(name)
        except (AttributeError, KeyError):  # a declaration may read keys this config lacks
            continue
    return accepting


class Predictor:
    """Runs the configured model on single images.

    Args:
        cfg: a config (not modified); ``MODEL.WEIGHTS`` is loaded if set.
    """

    def __init__(self, cfg):
        from d2ext.engine.trainer import Trainer  # the trainer imports heavier modules

        self.cfg = cfg.clone()
        self.model = Trainer.build_model(self.cfg).eval()
        if self.cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(self.cfg.MODEL.WEIGHTS)
        self.augmentations = T.AugmentationList(build_augmentations(self.cfg, is_train=False))
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT={self.input_format!r}: the predictor takes 'RGB' or 'BGR'")
        self.prompts = model_prompts(self.cfg)

    def check_prompts(self, **prompts) -> None:
        """Raises :class:`PromptError` naming the model for a prompt it does not accept."""
        for name, value in prompts.items():
            if value is not None and name not in self.prompts:
                arch = self.cfg.MODEL.META_ARCHITECTURE
                raise PromptError(
                    f"MODEL.META_ARCHITECTURE={arch!r} accepts no {name!r} prompts "
                    f"(it accepts {sorted(self.prompts) or 'none'}); models that take "
                    f"{name!r}: {_models_accepting(name, self.cfg) or 'none registered'}"
                )

    @torch.no_grad()
    def __call__(self, original_image: np.ndarray, points: Optional[np.ndarray] = None) -> Dict:
        """
        Args:
            original_image: (H, W, 3) uint8, BGR (as ``cv2.imread`` gives it).
            points: optional (N, 2) xy in pixels of ``original_image``.

        Returns:
            the model's output dict for the image (detectron2's formats, original size).
        """
        self.check_prompts(points=points)
        image = original_image[:, :, ::-1] if self.input_format == "RGB" else original_image
        height, width = image.shape[:2]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        transforms = self.augmentations(aug_input)
        tensor = torch.as_tensor(aug_input.image.astype("float32").transpose(2, 0, 1))
        inputs = {"image": tensor.to(self.cfg.MODEL.DEVICE), "height": height, "width": width}
        if points is not None:
            inputs["points"] = transform_points(transforms, points).to(self.cfg.MODEL.DEVICE)
        return self.model([inputs])[0]
