"""Panoptic quality by the number of ground-truth things per image.

Crowded scenes are where box-based and point-based instance methods differ, so
a single PQ hides the interesting part. :class:`PanopticByCountEvaluator`
takes the same inputs and outputs as detectron2's ``COCOPanopticEvaluator``
(whose id conversion it inherits), and computes panopticapi's ``pq_compute``
once over all images and once per group of images whose count of non-crowd
ground-truth thing segments lies in ``[bins[i], bins[i + 1])``.

:func:`panoptic_from_instances` gives a panoptic output to an instance-only
model (Mask R-CNN) the way Panoptic FPN combines its outputs, with a perfect
"no thing here" stuff map: things pasted by score, overlaps dropped above a
threshold, every other pixel one stuff class. PQ things is then comparable
with Panoptic FPN's; PQ stuff is not a property of the model.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import tempfile
from typing import Dict, List, Sequence

import torch
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.structures import Instances
from detectron2.utils import comm

__all__ = ["PanopticByCountEvaluator", "bin_label", "panoptic_from_instances", "thing_counts"]

logger = logging.getLogger(__name__)


def bin_label(low: int, high: int) -> str:
    """``"10-14"`` for the counts in [10, 15)."""
    return f"{low}-{high - 1}"


def thing_counts(gt_json: dict) -> Dict[int, int]:
    """image_id -> number of non-crowd thing segments of a COCO panoptic json."""
    is_thing = {c["id"]: bool(c.get("isthing", 0)) for c in gt_json["categories"]}
    counts = {}
    for ann in gt_json["annotations"]:
        counts[ann["image_id"]] = sum(
            1 for s in ann["segments_info"] if is_thing.get(s["category_id"], False) and not s.get("iscrowd", 0)
        )
    return counts


def _pq_metrics(pq_res: dict, num_images: int) -> Dict[str, float]:
    out = {"num_images": float(num_images)}
    for key, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        for metric in ("pq", "sq", "rq"):
            out[metric.upper() + key] = 100 * pq_res[group][metric]
    return out


class PanopticByCountEvaluator(COCOPanopticEvaluator):
    """COCO PQ over the dataset and per group of images by their ground-truth thing count.

    Results: ``{"panoptic_seg": {PQ, SQ, RQ, PQ_th, ...}, "panoptic_by_count":
    {"PQ_th@10-14": ..., "RQ_th@10-14": ..., "num_images@10-14": ..., ...}}``.
    """

    def __init__(self, dataset_name: str, bins: Sequence[int], output_dir=None):
        super().__init__(dataset_name, output_dir)
        bins = [int(b) for b in bins]
        if len(bins) < 2 or any(b >= c for b, c in zip(bins, bins[1:])):
            raise ValueError(f"bins {bins}: need at least two increasing edges (groups are [bins[i], bins[i+1]))")
        self._bins = bins

    def evaluate(self):
        comm.synchronize()
        predictions = list(itertools.chain(*comm.gather(self._predictions)))
        if not comm.is_main_process():
            return None
        from panopticapi.evaluation import pq_compute

        with open(self._metadata.panoptic_json) as f:
            gt_json = json.load(f)
        counts = thing_counts(gt_json)
        groups = {"all": [p["image_id"] for p in predictions]}
        for low, high in zip(self._bins, self._bins[1:]):
            groups[bin_label(low, high)] = [p["image_id"] for p in predictions if low <= counts[p["image_id"]] < high]

        results = {"panoptic_seg": {}, "panoptic_by_count": {}}
        with tempfile.TemporaryDirectory(prefix="panoptic_by_count") as tmp:
            pred_dir = os.path.join(tmp, "pred")
            os.makedirs(pred_dir)
            for p in predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p["png_string"])
            for name, image_ids in groups.items():
                if not image_ids:
                    logger.warning("no image has a thing count in %s", name)
                    continue
                wanted = set(image_ids)
                gt_subset = dict(gt_json, annotations=[a for a in gt_json["annotations"] if a["image_id"] in wanted])
                gt_subset["images"] = [i for i in gt_json["images"] if i["id"] in wanted]
                pred_subset = dict(gt_subset, annotations=[
                    {k: v for k, v in p.items() if k != "png_string"} for p in predictions if p["image_id"] in wanted
                ])
                gt_file, pred_file = os.path.join(tmp, f"gt_{name}.json"), os.path.join(tmp, f"pred_{name}.json")
                for path, data in ((gt_file, gt_subset), (pred_file, pred_subset)):
                    with open(path, "w") as f:
                        json.dump(data, f)
                with contextlib.redirect_stdout(io.StringIO()):
                    pq_res = pq_compute(gt_file, pred_file, gt_folder=self._metadata.panoptic_root, pred_folder=pred_dir)
                metrics = _pq_metrics(pq_res, len(image_ids))
                if name == "all":
                    results["panoptic_seg"] = metrics
                else:
                    results["panoptic_by_count"].update({f"{k}@{name}": v for k, v in metrics.items()})
        return results


def panoptic_from_instances(
    instances: Instances,
    stuff_label: int,
    overlap_threshold: float = 0.5,
    stuff_area_limit: int = 0,
    score_threshold: float = 0.5,
):
    """A ``panoptic_seg`` output (H, W int32 ids, segments_info) from ``instances`` with ``pred_masks``.

    Uses detectron2's Panoptic FPN combination with a semantic map that is
    ``stuff_label`` everywhere (``stuff_label`` > 0: 0 is Panoptic FPN's "things"
    class of the separated layout), so every pixel left by the things is that stuff.
    """
    if not instances.has("pred_masks"):
        raise ValueError("panoptic_from_instances needs instances with pred_masks (an instance segmentation model)")
    if stuff_label <= 0:
        raise ValueError(f"stuff_label={stuff_label}: must be a stuff class > 0 of the separated layout")
    height, width = instances.image_size
    semantic = torch.full((height, width), stuff_label, dtype=torch.long, device=instances.pred_masks.device)
    return combine_semantic_and_instance_outputs(
        instances, semantic, overlap_threshold, stuff_area_limit, score_threshold
    )
