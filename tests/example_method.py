"""A tiny method defined entirely in the tests, through d2ext's public extension points only.

It shows (and ``tests/d2ext/test_extension_points.py`` checks) that adding a
method touches nothing in ``d2ext/``: importing this module registers

- config keys ``MODEL.EXAMPLE.*`` (``d2ext.config.register_config``);
- a target builder that reads the config (``d2ext.data.targets.register_target``
  on a class with ``from_config``): the mean colour of the augmented image,
  times ``MODEL.EXAMPLE.TARGET_SCALE``;
- its model I/O (``d2ext.model_io.register_model_io``): trains on that target,
  outputs ``sem_seg`` and ``instances``, accepts ``"points"`` prompts;
- a trainer hook (``d2ext.engine.register_hooks``) that counts steps and keeps
  the count in the checkpoint;
- the meta-architecture ``ExampleClickSegmenter`` (detectron2's META_ARCH_REGISTRY).

The model is a 1x1 convolution. Training: squared error between its pooled
output and the target. Inference: per-pixel class scores (``sem_seg``), and,
when the input dict carries ``points`` (resized-image pixels), one disc of
``MODEL.EXAMPLE.RADIUS`` original-image pixels around each point, returned
at the original size, so a test can check that a click comes back where it
was given.
"""
from __future__ import annotations

from typing import Dict, List

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import configurable
from detectron2.engine import HookBase
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import nn
from torch.nn import functional as F

from d2ext.config import register_config
from d2ext.data.targets import TargetContext, register_target
from d2ext.engine import register_hooks
from d2ext.model_io import register_model_io

META_ARCH = "ExampleClickSegmenter"
TARGET = "example_mean_color"


def add_example_config(cfg: CN) -> None:
    cfg.MODEL.EXAMPLE = CN()
    cfg.MODEL.EXAMPLE.NUM_CLASSES = 5
    cfg.MODEL.EXAMPLE.RADIUS = 4.0  # disc radius around a click, original-image pixels
    cfg.MODEL.EXAMPLE.TARGET_SCALE = 1.0  # read by the target builder through from_config


register_config("example_method", add_example_config)


@register_target(TARGET, maps=())
class MeanColorTarget:
    """``out[TARGET]``: (3,) float, the augmented image's mean colour / 255 x scale."""

    def __init__(self, scale: float):
        self.scale = scale

    @classmethod
    def from_config(cls, cfg) -> "MeanColorTarget":
        return cls(scale=cfg.MODEL.EXAMPLE.TARGET_SCALE)

    def __call__(self, ctx: TargetContext, out: dict) -> None:
        h, w = ctx.image_size
        mean = ctx.image[:h, :w].reshape(-1, ctx.image.shape[2]).mean(axis=0) / 255.0
        out[TARGET] = torch.as_tensor(mean * self.scale, dtype=torch.float32)


register_model_io(
    META_ARCH,
    targets=lambda cfg: frozenset({TARGET}),
    outputs=lambda cfg: frozenset({"sem_seg", "instances"}),
    prompts=lambda cfg: frozenset({"points"}),
)


class StepCounter(HookBase):
    """Counts training steps; the count is checkpointed (state_dict) and survives --resume."""

    def __init__(self):
        self.steps = 0

    def after_step(self) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]


register_hooks(META_ARCH, lambda cfg, trainer: [StepCounter()])


@META_ARCH_REGISTRY.register()
class ExampleClickSegmenter(nn.Module):
    @configurable
    def __init__(self, *, num_classes: int, radius: float):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, kernel_size=1)
        self.color = nn.Linear(num_classes, 3)
        self.radius = radius

    @classmethod
    def from_config(cls, cfg) -> dict:
        return {"num_classes": cfg.MODEL.EXAMPLE.NUM_CLASSES, "radius": cfg.MODEL.EXAMPLE.RADIUS}

    @property
    def device(self) -> torch.device:
        return self.conv.weight.device

    def forward(self, batched_inputs: List[dict]):
        images = [x["image"].to(self.device).float() / 255.0 for x in batched_inputs]
        if self.training:
            pooled = torch.stack([self.conv(im[None]).mean(dim=(2, 3))[0] for im in images])
            target = torch.stack([x[TARGET] for x in batched_inputs]).to(self.device)
            return {"loss_example": F.mse_loss(self.color(pooled), target)}
        return [self._infer(im, x) for im, x in zip(images, batched_inputs)]

    def _infer(self, image: torch.Tensor, inputs: dict) -> Dict[str, object]:
        height, width = inputs.get("height", image.shape[1]), inputs.get("width", image.shape[2])
        scores = F.interpolate(self.conv(image[None]), size=(height, width), mode="bilinear")[0]
        out: Dict[str, object] = {"sem_seg": scores.softmax(dim=0)}
        points = inputs.get("points", torch.zeros((0, 2)))
        # Resized-image pixels -> original-image pixels (the mapper resized by these factors).
        scale = torch.tensor([width / image.shape[2], height / image.shape[1]], device=self.device)
        clicks = points.to(self.device) * scale
        ys = torch.arange(height, device=self.device).float() + 0.5
        xs = torch.arange(width, device=self.device).float() + 0.5
        dist2 = (xs[None, None, :] - clicks[:, 0, None, None]) ** 2 + (ys[None, :, None] - clicks[:, 1, None, None]) ** 2
        masks = dist2 <= self.radius**2  # (N, H, W)
        instances = Instances((height, width))
        instances.pred_masks = masks
        instances.pred_boxes = Boxes(torch.cat([clicks - self.radius, clicks + self.radius], dim=1))
        instances.scores = torch.ones(len(masks), device=self.device)
        instances.pred_classes = torch.zeros(len(masks), dtype=torch.int64, device=self.device)
        out["instances"] = instances
        return out
