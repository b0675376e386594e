"""Tensor-in, tensor-out views of detectron2 models, the form that tracing exports.

Shapes: N images, K classes, D detections, (H, W) the exported input size.

- :class:`SemanticSegAdapter`: images (N, 3, H, W) -> ``sem_seg`` (N, K, H, W), for
  any model whose inference returns "sem_seg" (SemanticSegmentor: Semantic FPN,
  PointRend semantic, ICNet; MaskFormer semantic).
- :func:`instance_adapter`: detectron2's ``TracingAdapter`` around
  ``GeneralizedRCNN.inference(..., do_postprocess=False)`` (Mask R-CNN, PointRend
  instance): image (3, H, W) -> pred_boxes (D, 4), pred_classes (D,),
  pred_masks (D, 1, M, M), scores (D,), image_size (2,), all at the input size;
  pasting the masks into the image (``detector_postprocess``) stays outside the
  graph, as in detectron2's own exports.

Input values in both: raw pixels in [0, 255], channels in the config's
``INPUT.FORMAT`` order, already resized to the export size by the caller (as
``DefaultPredictor`` does); normalization (``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``)
and padding to the size divisibility are inside the exported graph.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from d2ext.compat import tracing_adapter

__all__ = [
    "INSTANCE_OUTPUT_NAMES",
    "SemanticSegAdapter",
    "UnsupportedModelError",
    "instance_adapter",
]

# Outputs of instance_adapter, in the order TracingAdapter flattens them
# (Instances fields sorted by name, then the image size).
INSTANCE_OUTPUT_NAMES: Tuple[str, ...] = (
    "pred_boxes", "pred_classes", "pred_masks", "scores", "image_size",
)


class UnsupportedModelError(ValueError):
    """The model has no export path here; the message says which part and why."""


class SemanticSegAdapter(nn.Module):
    """images (N, 3, H, W) float32 raw pixels -> the model's "sem_seg" (N, K, H, W).

    For SemanticSegmentor models "sem_seg" is the class logits, for MaskFormer the
    per-class scores (sum over queries of p(class) x sigmoid(mask)); either at the
    input size, so argmax gives the label map.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs: List[Dict[str, torch.Tensor]] = []
        for image in images.unbind(0):
            inputs.append({"image": image})
        outputs = self.model(inputs)
        if "sem_seg" not in outputs[0]:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} returned no 'sem_seg': export it with "
                "--task instances, or enable its semantic output in the config"
            )
        return torch.stack([o["sem_seg"] for o in outputs])


def _rcnn_inference(model: nn.Module, inputs: List[Dict[str, torch.Tensor]]) -> List[Dict[str, object]]:
    instances = model.inference(inputs, do_postprocess=False)[0]
    return [{"instances": instances}]


def instance_adapter(model: nn.Module, image: torch.Tensor) -> nn.Module:
    """detectron2's TracingAdapter for a GeneralizedRCNN, traced on ``image`` (3, H, W).

    Raises:
        UnsupportedModelError: for other meta-architectures (their inference has no
            ``do_postprocess`` step to stop before, or returns more than Instances).
    """
    from detectron2.modeling import GeneralizedRCNN

    if not isinstance(model, GeneralizedRCNN):
        raise UnsupportedModelError(
            f"instance export supports GeneralizedRCNN models (MODEL.META_ARCHITECTURE "
            f"'GeneralizedRCNN': Mask R-CNN, PointRend); got {type(model).__name__}"
        )
    adapter = tracing_adapter()(model, [{"image": image}], _rcnn_inference)
    # eval() itself: a new Module is in training mode, and exporters restore the
    # mode they found, which would put the wrapped model back into training.
    return adapter.eval()


def check_instance_outputs(outputs: Sequence[torch.Tensor]) -> None:
    """Raises if ``outputs`` are not the INSTANCE_OUTPUT_NAMES tensors (a model without masks)."""
    if len(outputs) != len(INSTANCE_OUTPUT_NAMES):
        raise UnsupportedModelError(
            f"expected {len(INSTANCE_OUTPUT_NAMES)} instance outputs {INSTANCE_OUTPUT_NAMES}, "
            f"got {len(outputs)} (a detector without MODEL.MASK_ON?)"
        )
