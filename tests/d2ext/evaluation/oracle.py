"""Ground truth turned into model outputs (detectron2's output format), and a
model that returns them, for evaluator round trips."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image


def _read(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def _decode(segmentation, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, dict):  # RLE
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = mask_util.frPyObjects(rle, height, width)
    else:  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    return mask_util.decode(rle).astype(bool)


def _instances(height: int, width: int, masks, boxes, classes) -> Instances:
    n = len(classes)
    inst = Instances((height, width))
    inst.pred_masks = torch.as_tensor(np.stack(masks)) if n else torch.zeros(0, height, width, dtype=torch.bool)
    inst.pred_boxes = Boxes(torch.as_tensor(np.array(boxes, dtype=np.float32).reshape(n, 4)))
    inst.pred_classes = torch.as_tensor(classes, dtype=torch.int64)
    # distinct scores, so that ranking is deterministic
    inst.scores = torch.linspace(1.0, 0.5, n) if n else torch.zeros(0)
    return inst


def instances_from_annotations(d: dict) -> Instances:
    """Non-crowd ``annotations`` as (N, H, W) pred_masks, boxes, classes, scores."""
    h, w = d["height"], d["width"]
    annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
    masks = [_decode(a["segmentation"], h, w) for a in annos]
    boxes = [BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
    return _instances(h, w, masks, boxes, [a["category_id"] for a in annos])


def _panoptic_ids(d: dict) -> np.ndarray:
    rgb = _read(d["pan_seg_file_name"]).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def instances_from_panoptic(d: dict) -> Instances:
    """Non-crowd thing segments of a panoptic dict as instances."""
    ids = _panoptic_ids(d)
    h, w = ids.shape
    masks, boxes, classes = [], [], []
    for s in d["segments_info"]:
        if s["isthing"] and not s.get("iscrowd", 0):
            mask = ids == s["id"]
            ys, xs = np.nonzero(mask)
            masks.append(mask)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            classes.append(s["category_id"])
    return _instances(h, w, masks, boxes, classes)


def panoptic_from_dict(d: dict):
    """(panoptic ids (H, W) int32, segments_info) with crowd segments left void (0)."""
    ids = _panoptic_ids(d)
    out = np.zeros_like(ids, dtype=np.int32)
    segments = []
    for s in d["segments_info"]:
        if s.get("iscrowd", 0):
            continue
        out[ids == s["id"]] = len(segments) + 1
        segments.append(
            {"id": len(segments) + 1, "category_id": s["category_id"], "isthing": bool(s["isthing"])}
        )
    return torch.as_tensor(out), segments


def one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """(C, H, W) float scores whose argmax is labels; ignored pixels score 0 everywhere."""
    labels = torch.as_tensor(labels.astype(np.int64))
    valid = labels < num_classes
    out = torch.zeros(num_classes, *labels.shape)
    out.scatter_(0, torch.where(valid, labels, 0)[None], valid[None].float())
    return out


def sem_seg_from_file(path: str, num_classes: int) -> torch.Tensor:
    return one_hot(_read(path), num_classes)


class OracleModel(torch.nn.Module):
    """Returns the stored outputs of each input image (keyed by file_name)."""

    def __init__(self, outputs: Dict[str, dict]):
        super().__init__()
        self.outputs = outputs

    def forward(self, batched_inputs: List[dict]) -> List[dict]:
        return [self.outputs[x["file_name"]] for x in batched_inputs]


def run(evaluator, dicts: Sequence[dict], outputs: Dict[str, dict]):
    """detectron2's inference_on_dataset with the oracle, one image per batch."""
    return inference_on_dataset(OracleModel(outputs), [[d] for d in dicts], evaluator)


def panoptic_from_json(meta) -> Dict[object, tuple]:
    """image_id -> (panoptic ids (H, W), segments_info) from a dataset's panoptic json,
    category ids made contiguous through its metadata (either panoptic flavour)."""
    import json
    import os

    with open(meta.panoptic_json) as f:
        data = json.load(f)
    things = meta.thing_dataset_id_to_contiguous_id
    stuff = meta.stuff_dataset_id_to_contiguous_id
    out = {}
    for ann in data["annotations"]:
        d = {"pan_seg_file_name": os.path.join(meta.panoptic_root, ann["file_name"])}
        d["segments_info"] = [
            {
                "id": s["id"],
                "iscrowd": s.get("iscrowd", 0),
                "isthing": s["category_id"] in things,
                "category_id": things.get(s["category_id"], stuff.get(s["category_id"])),
            }
            for s in ann["segments_info"]
        ]
        out[ann["image_id"]] = panoptic_from_dict(d)
    return out
