"""Boundary-quality metrics of finished instance-segmentation runs: strict mask AP and Boundary AP.

    python -m d2ext_projects.pointrend.boundary_eval RUN_DIR [RUN_DIR ...] [--dataset toy_instances_val]

Reads the predictions that d2ext's COCO evaluation wrote
(``RUN_DIR/inference/<dataset>/coco_instances_results.json``) and the dataset's
ground-truth json, and reports, per run and as mean ± std over the runs:

- ``AP``, ``AP75``: COCO mask AP (pycocotools; the same numbers as the run's own evaluation);
- ``AP_strict``: mask AP averaged over the IoU thresholds 0.85, 0.90, 0.95 only,
  which mostly rewards accurate boundaries;
- ``boundary_AP``: Boundary AP (Cheng et al., CVPR 2021): COCO AP with each
  mask IoU replaced by min(mask IoU, boundary IoU), the boundary of a mask being
  its pixels within d = round(0.02 x image diagonal) of its contour (mask minus
  its erosion by d, the image border counting as contour).

Works for any instance model's runs (the Mask R-CNN baselines too).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
from typing import Dict, List, Sequence

import numpy as np

__all__ = ["boundary_mask", "evaluate_run", "evaluate_files"]

STRICT_THRESHOLDS = (0.85, 0.90, 0.95)
DILATION_RATIO = 0.02


def boundary_mask(mask: np.ndarray, dilation_ratio: float = DILATION_RATIO) -> np.ndarray:
    """(H, W) binary mask -> its boundary band: mask pixels within d of the contour."""
    import cv2

    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h * h + w * w))))
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
    return (mask.astype(np.uint8) - eroded).astype(np.uint8)


def _boundary_rles(rles: List[dict]) -> List[dict]:
    from pycocotools import mask as mask_util

    out = []
    for rle in rles:
        b = boundary_mask(mask_util.decode(rle))
        out.append(mask_util.encode(np.asfortranarray(b)))
    return out


def _coco_eval_class():
    from pycocotools import mask as mask_util
    from pycocotools.cocoeval import COCOeval

    class BoundaryCOCOeval(COCOeval):
        """COCOeval (segm) whose IoU is min(mask IoU, boundary IoU)."""

        def computeIoU(self, imgId, catId):
            p = self.params
            if p.useCats:
                gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
            else:
                gt = [g for c in p.catIds for g in self._gts[imgId, c]]
                dt = [d for c in p.catIds for d in self._dts[imgId, c]]
            if not gt or not dt:
                return []
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in order][: p.maxDets[-1]]
            g = [x["segmentation"] for x in gt]
            d = [x["segmentation"] for x in dt]
            crowd = [int(x["iscrowd"]) for x in gt]
            mask_iou = mask_util.iou(d, g, crowd)
            boundary_iou = mask_util.iou(_boundary_rles(d), _boundary_rles(g), crowd)
            return np.minimum(mask_iou, boundary_iou)

    return COCOeval, BoundaryCOCOeval


def _ap_at(precision: np.ndarray, t: int) -> float:
    """COCO AP (area all, max dets 100) at IoU-threshold index t, in percent."""
    p = precision[t, :, :, 0, -1]
    p = p[p > -1]
    return float(p.mean() * 100) if p.size else float("nan")


def evaluate_files(gt_json: str, results_json: str) -> Dict[str, float]:
    """Metrics of one predictions file against one COCO ground-truth file (percent)."""
    from pycocotools.coco import COCO

    COCOeval, BoundaryCOCOeval = _coco_eval_class()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_json)
        with open(results_json) as f:
            results = json.load(f)
        if not results:
            return {"AP": 0.0, "AP75": 0.0, "AP_strict": 0.0, "boundary_AP": 0.0}
        dt = gt.loadRes(results)
        out = {}
        for key, cls in (("mask", COCOeval), ("boundary", BoundaryCOCOeval)):
            ev = cls(gt, dt, "segm")
            ev.params.imgIds = sorted(gt.getImgIds())  # the runs evaluate the whole split
            ev.evaluate()
            ev.accumulate()
            prec = ev.eval["precision"]
            thresholds = list(np.round(ev.params.iouThrs, 2))
            if key == "mask":
                out["AP"] = float(np.mean([_ap_at(prec, t) for t in range(len(thresholds))]))
                out["AP75"] = _ap_at(prec, thresholds.index(0.75))
                out["AP_strict"] = float(np.mean([_ap_at(prec, thresholds.index(t)) for t in STRICT_THRESHOLDS]))
            else:
                out["boundary_AP"] = float(np.mean([_ap_at(prec, t) for t in range(len(thresholds))]))
    return out


def evaluate_run(run_dir: str, dataset: str) -> Dict[str, float]:
    import d2ext  # noqa: F401  (registers the datasets)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    results = os.path.join(run_dir, "inference", dataset, "coco_instances_results.json")
    if not os.path.exists(results):
        raise SystemExit(f"{run_dir}: no {results} (did the run finish its evaluation?)")
    DatasetCatalog.get(dataset)  # generates the toy data on first use
    gt_json = MetadataCatalog.get(dataset).json_file
    return evaluate_files(gt_json, results)


def _cell(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="OUTPUT_DIRs of finished runs (one per seed)")
    parser.add_argument("--dataset", default="toy_instances_val")
    args = parser.parse_args(argv)
    per_run = {run: evaluate_run(run, args.dataset) for run in args.runs}
    keys = ["AP", "AP75", "AP_strict", "boundary_AP"]
    for run, m in per_run.items():
        print(run, " ".join(f"{k}={m[k]:.2f}" for k in keys))
    print(f"runs: {len(args.runs)}")
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    print("| " + " | ".join(_cell([m[k] for m in per_run.values()]) for k in keys) + " |")


if __name__ == "__main__":
    sys.exit(main())
