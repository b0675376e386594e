"""Overlays of any d2ext model's predictions, drawn with detectron2's Visualizer.

Every meta-architecture returns detectron2's standard output format, so one
drawing function serves all of them. It only reads the dataset's metadata: the
catalog entry is never modified (class names and colors that a prediction
needs but the metadata lacks go into a private copy).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["metadata_from_cfg", "draw_predictions", "predictions_summary"]


def metadata_from_cfg(cfg) -> Metadata:
    """Metadata of ``cfg.DATASETS.TEST[0]``, else ``TRAIN[0]``, else an empty entry."""
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    return MetadataCatalog.get(names[0]) if names else Metadata(name="unnamed")


def _with_classes(metadata: Metadata, num_things: int, num_stuff: int) -> Metadata:
    """A copy of ``metadata`` whose class and color lists cover the predicted ids."""
    fields = dict(metadata.as_dict())
    fields.pop("name", None)
    palette = (colormap(rgb=True, maximum=255)).astype(int).tolist()

    for kind, needed in (("thing", num_things), ("stuff", num_stuff)):
        names = list(fields.get(f"{kind}_classes", []))
        if len(names) < needed:
            names += [f"class {i}" for i in range(len(names), needed)]
        fields[f"{kind}_classes"] = names
        colors = fields.get(f"{kind}_colors")
        if colors is not None and len(colors) < len(names):
            # Colors for the ids the dataset does not name, from detectron2's palette.
            fields[f"{kind}_colors"] = list(colors) + [
                palette[i % len(palette)] for i in range(len(colors), len(names))
            ]
    copy = Metadata(name=f"{metadata.name}/visualization")
    copy.set(**fields)
    return copy


def _filter_instances(instances, confidence_threshold: float):
    instances = instances.to("cpu")
    if instances.has("scores") and confidence_threshold > 0:
        instances = instances[instances.scores >= confidence_threshold]
    return instances


def predictions_summary(predictions: Dict[str, Any], confidence_threshold: float = 0.0) -> str:
    """A short description for a log line: what was drawn, and how much of it."""
    if "panoptic_seg" in predictions:
        seg, info = predictions["panoptic_seg"]
        n = len(info) if info is not None else len(torch.unique(seg))
        return f"panoptic_seg: {n} segments"
    if "sem_seg" in predictions:
        sem_seg = predictions["sem_seg"]
        labels = sem_seg.argmax(dim=0) if sem_seg.dim() == 3 else sem_seg
        return f"sem_seg: {len(torch.unique(labels))} classes present"
    if "instances" in predictions:
        n = len(_filter_instances(predictions["instances"], confidence_threshold))
        return f"instances: {n} with score >= {confidence_threshold:g}"
    return f"nothing drawable in outputs {sorted(predictions)}"


def draw_predictions(
    image_rgb: np.ndarray,
    predictions: Dict[str, Any],
    metadata: Optional[Metadata] = None,
    *,
    confidence_threshold: float = 0.0,
    instance_mode: ColorMode = ColorMode.IMAGE,
) -> np.ndarray:
    """Draws one image's predictions; returns an RGB uint8 image of the input's size.

    What is drawn, by preference: ``panoptic_seg``; else ``sem_seg`` (its argmax
    over classes when given scores (C, H, W)); else ``instances`` with score
    >= ``confidence_threshold``. Predictions may be on any device.

    Args:
        image_rgb: (H, W, 3) image in RGB order, values in [0, 255].
        predictions: one image's model output in detectron2's format.
        metadata: class names and colors; numbered names stand in for ids it lacks.
    """
    if metadata is None:
        metadata = Metadata(name="unnamed")
    num_things = num_stuff = 0
    draw = None

    if "panoptic_seg" in predictions:
        seg, segments_info = predictions["panoptic_seg"]
        seg = seg.to("cpu")
        if segments_info is not None:
            for s in segments_info:
                if s.get("isthing", False):
                    num_things = max(num_things, int(s["category_id"]) + 1)
                else:
                    num_stuff = max(num_stuff, int(s["category_id"]) + 1)
        draw = lambda v: v.draw_panoptic_seg(seg, segments_info)  # noqa: E731
    elif "sem_seg" in predictions:
        sem_seg = predictions["sem_seg"].to("cpu")
        if sem_seg.dim() == 3:
            num_stuff = sem_seg.shape[0]
            sem_seg = sem_seg.argmax(dim=0)
        else:
            num_stuff = int(sem_seg.max()) + 1 if sem_seg.numel() else 0
        draw = lambda v: v.draw_sem_seg(sem_seg)  # noqa: E731
    elif "instances" in predictions:
        instances = _filter_instances(predictions["instances"], confidence_threshold)
        if instances.has("pred_classes") and len(instances):
            num_things = int(instances.pred_classes.max()) + 1
        draw = lambda v: v.draw_instance_predictions(instances)  # noqa: E731

    visualizer = Visualizer(
        image_rgb, _with_classes(metadata, num_things, num_stuff), instance_mode=instance_mode
    )
    out = draw(visualizer) if draw is not None else visualizer.output
    return out.get_image()


def draw_points(image_rgb: np.ndarray, points: np.ndarray, radius: Optional[int] = None) -> np.ndarray:
    """Draws clicks as filled discs with a dark ring, numbered in order; returns a new image.

    Args:
        image_rgb: (H, W, 3) uint8.
        points: (N, 2) xy in the image's pixels (continuous: a pixel's centre is at +0.5).
        radius: disc radius in pixels; default about 1.5 % of the shorter side (at least 3).
    """
    import cv2  # only the demo draws clicks; keeps cv2 off the import path of the rest

    out = np.ascontiguousarray(image_rgb.copy())
    if radius is None:
        radius = max(3, int(round(0.015 * min(out.shape[:2]))))
    for k, (x, y) in enumerate(np.asarray(points, dtype=np.float64)):
        centre = (int(np.floor(x)), int(np.floor(y)))
        cv2.circle(out, centre, radius + 1, (0, 0, 0), thickness=-1, lineType=cv2.LINE_AA)
        cv2.circle(out, centre, radius, (255, 230, 0), thickness=-1, lineType=cv2.LINE_AA)
        cv2.putText(out, str(k + 1), (centre[0] + radius + 2, centre[1] - radius - 2),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out
