"""Cityscapes instance-level AP with cityscapesscripts' official evaluation.

Predictions are written in Cityscapes' result format: per image a text file
``<city>_<seq>_<frame>_pred.txt`` with lines ``<mask png> <label id> <score>``,
each mask a binary PNG; then evalInstanceLevelSemanticLabeling matches them to
``gtFine/<split>/<city>/*_gtFine_instanceIds.png``.
"""
from __future__ import annotations

import io
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from .cityscapes_common import CityscapesEvaluatorBase, cityscapes_args, core_name, run_cityscapes

logger = logging.getLogger(__name__)


def _png_bytes(mask: np.ndarray) -> bytes:
    with io.BytesIO() as buf:
        Image.fromarray(mask).save(buf, format="PNG")  # bool -> 1-bit PNG
        return buf.getvalue()


class CityscapesInstanceEvaluator(CityscapesEvaluatorBase):
    """Mask AP and AP50 (x100) on Cityscapes' 8 evaluated thing classes.

    Reads ``outputs[i]["instances"]`` (``pred_masks`` (N, H, W), ``pred_classes``
    (N,) indexing the dataset's ``thing_classes``, ``scores`` (N,)). Classes that
    Cityscapes does not evaluate (e.g. stuff classes of a panoptic dataset) are
    dropped. Returns ``{"segm": {"AP", "AP50", "AP-<class>"...}}`` on the main
    process, None on the others.
    """

    _result_subdir = "cityscapes_instance"

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
    ):
        super().__init__(dataset_name, output_dir, distributed)
        from cityscapesscripts.helpers.labels import name2label

        def label_id(name: str) -> Optional[int]:
            label = name2label.get(name)
            if label is None or not label.hasInstances or label.ignoreInEval:
                return None
            return label.id

        # contiguous class -> Cityscapes label id (None: not evaluated)
        self._label_ids = [label_id(n) for n in self._metadata.thing_classes]
        if not any(i is not None for i in self._label_ids):
            raise ValueError(
                f"Dataset {dataset_name!r}: none of thing_classes {self._metadata.thing_classes} "
                "is a Cityscapes instance class"
            )

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            masks: List[tuple] = []  # (label id, score, png bytes)
            if "instances" in out:
                inst = out["instances"].to(self._cpu_device)
                if len(inst):
                    pred_masks = inst.pred_masks.numpy() >= 0.5
                    classes = inst.pred_classes.tolist()
                    scores = inst.scores.tolist()
                    for mask, cls, score in zip(pred_masks, classes, scores):
                        label_id = self._label_ids[cls]
                        if label_id is None or not mask.any():
                            continue
                        masks.append((label_id, float(score), _png_bytes(mask)))
            self._predictions.append(
                {"core": core_name(inp["file_name"]), "file_name": inp["file_name"], "masks": masks}
            )

    def _write(self, predictions: List[dict], work_dir: str) -> List[str]:
        """Writes Cityscapes' result files; returns the text file of each prediction."""
        os.makedirs(os.path.join(work_dir, "masks"))
        txt_files = []
        for p in predictions:
            lines = []
            for k, (label_id, score, png) in enumerate(p["masks"]):
                rel = os.path.join("masks", f"{p['core']}_{k}_{label_id}.png")
                with open(os.path.join(work_dir, rel), "wb") as f:
                    f.write(png)
                lines.append(f"{rel} {label_id} {score!r}\n")
            txt = os.path.join(work_dir, f"{p['core']}_pred.txt")
            with open(txt, "w") as f:
                f.writelines(lines)
            txt_files.append(txt)
        return txt_files

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        predictions = self._gathered()
        if predictions is None:
            return None
        predictions = self._unique_by_image(predictions)
        gt_files = self._ground_truth(predictions, "instanceIds.png")
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs_eval

        with self._working_dir() as work_dir:
            n_masks = sum(len(p["masks"]) for p in predictions)
            logger.info(
                f"Writing {n_masks} Cityscapes instance predictions for {len(predictions)} "
                f"images to {work_dir} ..."
            )
            pred_files = self._write(predictions, work_dir)
            args = cityscapes_args(
                cs_eval,
                predictionPath=work_dir,
                predictionWalk=None,
                gtInstancesFile=os.path.join(work_dir, "gtInstances.json"),
                exportFile=os.path.join(work_dir, "resultInstanceLevelSemanticLabeling.json"),
                JSONOutput=bool(self._output_dir),  # kept only beside kept predictions
                quiet=True,
                csv=False,
                colorized=False,
            )
            logger.info(
                f"Running cityscapesscripts evalInstanceLevelSemanticLabeling on "
                f"{len(gt_files)} images ..."
            )
            averages = run_cityscapes(self._run, cs_eval, pred_files, gt_files, args)

        res = {"AP": 100.0 * averages["allAp"], "AP50": 100.0 * averages["allAp50%"]}
        for name, scores in averages["classes"].items():
            res[f"AP-{name}"] = 100.0 * scores["ap"]
        logger.info(
            "Cityscapes instance results:\n"
            + "\n".join(f"  {k:<16} {v:8.3f}" for k, v in res.items())
        )
        return OrderedDict(segm=res)

    @staticmethod
    def _run(cs_eval, pred_files: List[str], gt_files: List[str], args) -> dict:
        # evalInstanceLevelSemanticLabeling.evaluateImgLists, step by step: the
        # same calls, without its dump of every match to ./matches.json (the
        # current working directory).
        cs_eval.setInstanceLabels(args)
        gt_instances = cs_eval.getGtInstances(gt_files, args)
        matches = cs_eval.matchGtWithPreds(pred_files, gt_files, gt_instances, args)
        ap_scores = cs_eval.evaluateMatches(matches, args)
        averages = cs_eval.computeAverages(ap_scores, args)
        if args.JSONOutput:
            cs_eval.writeDict2JSON(
                cs_eval.prepareJSONDataForResults(averages, ap_scores, args), args.exportFile
            )
        return averages
