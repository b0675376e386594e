#!/usr/bin/env python
"""Panoptic quality of a trained model by the number of ground-truth things per image.

    python tools/eval_panoptic_by_count.py --config-file CFG --dataset toy_rods_panoptic_separated_val \
        --bins 10 15 20 25 31 [--output JSON] MODEL.WEIGHTS model_final.pth [KEY VALUE ...]

The model runs on ``--dataset`` (a COCO panoptic dataset; default
``DATASETS.TEST[0]``) with the config's test mapper. A model that returns
``panoptic_seg`` is scored on it; an instance-only model (Mask R-CNN) gets a
panoptic output by Panoptic FPN's combination with a perfect stuff map (every
pixel without a thing is the dataset's only stuff class, see
``d2ext.evaluation.panoptic_by_count.panoptic_from_instances``), so its PQ
things compares with Panoptic FPN's and its PQ stuff means nothing. Prints PQ
overall and PQ / RQ / SQ things per group ``[bins[i], bins[i+1])``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("d2ext.tools.eval_panoptic_by_count")


class _PanopticFromInstances(nn.Module):
    """Adds ``panoptic_seg`` to the outputs of an instance-only model."""

    def __init__(self, model: nn.Module, stuff_label: int, overlap: float, area_limit: int, score: float):
        super().__init__()
        self.model, self.stuff_label = model, stuff_label
        self.overlap, self.area_limit, self.score = overlap, area_limit, score

    def forward(self, inputs: List[dict]) -> List[dict]:
        from d2ext.evaluation.panoptic_by_count import panoptic_from_instances

        outputs = self.model(inputs)
        for out in outputs:
            if "panoptic_seg" not in out:
                out["panoptic_seg"] = panoptic_from_instances(
                    out["instances"], self.stuff_label, self.overlap, self.area_limit, self.score
                )
        return outputs


def _only_stuff_label(meta, dataset: str) -> int:
    """The contiguous id of the dataset's one real stuff class in the separated layout (0 is "things")."""
    labels = sorted(v for v in meta.stuff_dataset_id_to_contiguous_id.values() if v > 0)
    if len(labels) != 1:
        raise SystemExit(
            f"--dataset {dataset}: an instance-only model needs a separated panoptic dataset with exactly one "
            f"stuff class besides 'things' (contiguous ids > 0: {labels}) to fill the pixels without things"
        )
    return labels[0]


def run(cfg, dataset: str, bins: List[int]) -> Dict:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import MetadataCatalog, build_detection_test_loader
    from detectron2.evaluation import inference_on_dataset

    from d2ext.data.mapper import CommonDatasetMapper
    from d2ext.engine import Trainer
    from d2ext.evaluation.panoptic_by_count import PanopticByCountEvaluator
    from d2ext.model_io import model_outputs

    meta = MetadataCatalog.get(dataset)
    if getattr(meta, "evaluator_type", None) != "coco_panoptic_seg":
        raise SystemExit(f"--dataset {dataset}: not a COCO panoptic dataset (evaluator_type {meta.get('evaluator_type')!r})")
    model = Trainer.build_model(cfg).eval()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if "panoptic_seg" not in model_outputs(cfg):
        c = cfg.MODEL.PANOPTIC_FPN.COMBINE  # the same thresholds as Panoptic FPN of this config
        model = _PanopticFromInstances(
            model, _only_stuff_label(meta, dataset), c.OVERLAP_THRESH, c.STUFF_AREA_LIMIT, c.INSTANCES_CONFIDENCE_THRESH
        )
    loader = build_detection_test_loader(cfg, dataset, mapper=CommonDatasetMapper(cfg, is_train=False))
    evaluator = PanopticByCountEvaluator(dataset, bins)
    with torch.no_grad():
        return dict(inference_on_dataset(model, loader, evaluator))


def main(argv=None) -> Dict:
    import d2ext_projects  # noqa: F401  (registers every method)
    from d2ext.benchmark.report import write_json
    from d2ext.engine import load_cfg
    from d2ext.tool_logging import setup_tool_logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default=None, help="COCO panoptic dataset (default: DATASETS.TEST[0])")
    p.add_argument("--bins", type=int, nargs="+", default=[10, 15, 20, 25, 31], help="group edges [b_i, b_i+1)")
    p.add_argument("--output", default=None, metavar="JSON")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    setup_tool_logging()
    cfg = load_cfg(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("MODEL.WEIGHTS is empty: pass a trained model (MODEL.WEIGHTS path/model_final.pth)")
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if not dataset:
        raise SystemExit("no dataset: pass --dataset or set DATASETS.TEST")
    results = run(cfg, dataset, args.bins)
    overall = results["panoptic_seg"]
    logger.info("%s: PQ %.1f, PQ things %.1f", dataset, overall["PQ"], overall["PQ_th"])
    groups = results["panoptic_by_count"]
    for low, high in zip(args.bins, args.bins[1:]):
        key = f"{low}-{high - 1}"
        if f"PQ_th@{key}" in groups:
            logger.info(
                "things %6s per image (%3d images): PQ %.1f  RQ %.1f  SQ %.1f", key, groups[f"num_images@{key}"],
                groups[f"PQ_th@{key}"], groups[f"RQ_th@{key}"], groups[f"SQ_th@{key}"],
            )
    if args.output:
        write_json(args.output, {"args": vars(args), "results": results})
    return results


if __name__ == "__main__":
    main()
