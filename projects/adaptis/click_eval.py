"""Click-to-segment and oracle-click evaluation of an AdaptIS model.

    python -m d2ext_projects.adaptis.click_eval --config-file CFG [--mode clicks|oracle]
        [--click random|center] [--seed 0] [--max-images N] [--output JSON] [KEY VALUE ...]

One click per ground-truth thing of ``DATASETS.TEST[0]`` (non-crowd segments
of its panoptic annotation), in original-image pixels:

- ``random``: a uniformly random pixel of the segment (seeded per image);
- ``center``: the pixel farthest from the segment's boundary (Euclidean
  distance transform; the first in raster order on ties).

``--mode clicks``: every click goes through the model's ``points`` prompt
(transformed by the test mapper like any prompt); the IoU of each click's mask
with its segment, at the original size. Reports mean and median IoU and the
fraction of clicks with IoU >= 0.5 and >= 0.85, overall and per class.

``--mode oracle``: the clicks replace the proposal map's candidates in the
same greedy assembly (largest segment first), and the outputs go through the
dataset's evaluators (PQ, mask AP, mIoU): the panoptic quality AdaptIS reaches
with perfect proposals, which separates proposal quality from selection quality.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
from typing import Dict, List

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data import detection_utils as utils
from detectron2.evaluation import inference_on_dataset
from detectron2.utils.logger import setup_logger
from scipy.ndimage import distance_transform_edt
from torch import nn

__all__ = ["click_points", "iou_summary", "main"]

logger = logging.getLogger(__name__)


def _segments(dataset_dict: dict, thing_ids) -> List[dict]:
    """Non-crowd thing segments of a panoptic dict: [{"mask" (H, W) bool, "category_id"}]."""
    rgb = utils.read_image(dataset_dict["pan_seg_file_name"], format="RGB").astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    out = []
    for s in dataset_dict["segments_info"]:
        if s.get("iscrowd", 0) or s["category_id"] not in thing_ids:
            continue
        mask = ids == s["id"]
        if mask.any():
            out.append({"mask": mask, "category_id": s["category_id"]})
    return out


def click_points(masks: List[np.ndarray], how: str, rng: np.random.Generator) -> np.ndarray:
    """(N, 2) xy click per mask (pixel centres, +0.5): ``random`` or ``center``."""
    points = []
    for mask in masks:
        if how == "random":
            ys, xs = np.nonzero(mask)
            k = rng.integers(len(ys))
            y, x = ys[k], xs[k]
        elif how == "center":
            dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
            y, x = np.unravel_index(int(np.argmax(dist)), mask.shape)
        else:
            raise ValueError(f"--click {how!r}: expected 'random' or 'center'")
        points.append([x + 0.5, y + 0.5])
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def iou_summary(ious: List[float], classes: List[int], names: List[str]) -> Dict[str, Dict[str, float]]:
    """{"all" | class name: {"mean_iou", "median_iou", "iou>=0.5", "iou>=0.85", "clicks"}} in percent."""

    def stats(values: np.ndarray) -> Dict[str, float]:
        if values.size == 0:
            return {"mean_iou": float("nan"), "median_iou": float("nan"), "iou>=0.5": float("nan"),
                    "iou>=0.85": float("nan"), "clicks": 0}
        return {
            "mean_iou": 100 * float(values.mean()),
            "median_iou": 100 * float(np.median(values)),
            "iou>=0.5": 100 * float((values >= 0.5).mean()),
            "iou>=0.85": 100 * float((values >= 0.85).mean()),
            "clicks": int(values.size),
        }

    ious_a, classes_a = np.asarray(ious, dtype=np.float64), np.asarray(classes)
    out = {"all": stats(ious_a)}
    for c in sorted(set(classes)):
        out[names[c]] = stats(ious_a[classes_a == c])
    return out


class _OracleCandidates(nn.Module):
    """Sends the mapped "points" to the model as the assembly's "candidates"."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: List[dict]):
        moved = []
        for x in inputs:
            x = dict(x)
            x["candidates"] = x.pop("points")
            moved.append(x)
        return self.model(moved)


def _with_clicks(dicts: List[dict], thing_ids, how: str, seed: int, largest_first: bool):
    """Copies of the dicts with "points" (one per thing), and per dict the segments."""
    out, segments = [], []
    for index, d in enumerate(dicts):
        segs = _segments(d, thing_ids)
        if largest_first:
            segs.sort(key=lambda s: -int(s["mask"].sum()))
        rng = np.random.default_rng([seed, index])  # the same clicks for every model
        d = copy.deepcopy(d)
        d["points"] = click_points([s["mask"] for s in segs], how, rng)
        out.append(d)
        segments.append(segs)
    return out, segments


def run(cfg, mode: str, how: str, seed: int, max_images: int = -1) -> Dict:
    from d2ext.data.mapper import CommonDatasetMapper
    from d2ext.engine import Trainer

    name = cfg.DATASETS.TEST[0]
    meta = MetadataCatalog.get(name)
    thing_ids = set(meta.thing_dataset_id_to_contiguous_id.values())
    dicts = DatasetCatalog.get(name)
    if max_images > 0 and mode == "oracle":
        raise ValueError("--max-images applies to --mode clicks only: PQ is computed over the whole dataset")
    if max_images > 0:
        dicts = dicts[:max_images]
    model = Trainer.build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    clicked, segments = _with_clicks(dicts, thing_ids, how, seed, largest_first=(mode == "oracle"))
    mapper = CommonDatasetMapper(cfg, is_train=False)
    loader = build_detection_test_loader(clicked, mapper=mapper, num_workers=cfg.DATALOADER.NUM_WORKERS)
    if mode == "oracle":
        evaluator = Trainer.build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "oracle", name))
        return dict(inference_on_dataset(_OracleCandidates(model), loader, evaluator))
    if mode != "clicks":
        raise ValueError(f"--mode {mode!r}: expected 'clicks' or 'oracle'")
    ious, classes = [], []
    with torch.no_grad():
        for batch, segs in zip(loader, segments):
            (out,) = model(batch)
            pred = out["instances"].pred_masks.cpu().numpy()
            for k, s in enumerate(segs):
                inter = np.logical_and(pred[k], s["mask"]).sum()
                union = np.logical_or(pred[k], s["mask"]).sum()
                ious.append(float(inter / max(union, 1)))
                classes.append(s["category_id"])
    return iou_summary(ious, classes, list(meta.stuff_classes))


def main(argv=None) -> Dict:
    import d2ext_projects  # noqa: F401  (registers every method)
    from d2ext.benchmark.report import write_json
    from d2ext.engine import load_cfg
    from d2ext.tool_logging import setup_tool_logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--mode", choices=("clicks", "oracle"), default="clicks")
    p.add_argument("--click", choices=("random", "center"), default="random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, default=-1)
    p.add_argument("--output", default=None, metavar="JSON")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    setup_tool_logging()
    setup_logger(name="d2ext_projects", abbrev_name="d2ext_projects")
    cfg = load_cfg(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("MODEL.WEIGHTS is empty: pass a trained model (MODEL.WEIGHTS path/model_final.pth)")
    results = run(cfg, args.mode, args.click, args.seed, args.max_images)
    logger.info("%s (%s clicks, seed %d): %s", args.mode, args.click, args.seed, json.dumps(results, indent=1))
    if args.output:
        write_json(args.output, {"args": vars(args), "results": results})
    return results


if __name__ == "__main__":
    main()
