"""Cityscapes pixel-level IoU / iIoU with cityscapesscripts' official evaluation.

Predictions are written as label-id PNGs (``<city>_<seq>_<frame>_pred.png``,
Cityscapes' label ids, not trainIds), then evalPixelLevelSemanticLabeling
compares them with ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` (and
``*_instanceIds.png`` for the instance-weighted iIoU).
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

# Written where a predicted class has no evaluated Cityscapes label: "unlabeled",
# which the evaluation counts as a miss, never as a hit.
_UNLABELED_ID = 0


class CityscapesSemSegEvaluator(CityscapesEvaluatorBase):
    """Class/category IoU and instance-weighted iIoU (x100) on Cityscapes' 19 classes.

    Reads ``outputs[i]["sem_seg"]`` (C, H, W) scores whose channel c is the
    dataset's ``stuff_classes[c]`` (trainId order for Cityscapes datasets); the
    argmax is converted to label ids by class name. Returns
    ``{"sem_seg": {"IoU", "iIoU", "IoU_sup", "iIoU_sup", "IoU-<class>"...}}`` on
    the main process, None on the others.
    """

    _result_subdir = "cityscapes_sem_seg"

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
    ):
        super().__init__(dataset_name, output_dir, distributed)
        from cityscapesscripts.helpers.labels import name2label

        def label_id(name: str) -> int:
            label = name2label.get(name)
            if label is None or label.ignoreInEval:
                return _UNLABELED_ID
            return label.id

        # (C,) contiguous class -> Cityscapes label id
        self._to_label_id = np.array(
            [label_id(n) for n in self._metadata.stuff_classes], dtype=np.uint8
        )
        if not (self._to_label_id != _UNLABELED_ID).any():
            raise ValueError(
                f"Dataset {dataset_name!r}: none of stuff_classes {self._metadata.stuff_classes} "
                "is an evaluated Cityscapes class"
            )

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for inp, out in zip(inputs, outputs):
            sem_seg = out["sem_seg"]
            if sem_seg.shape[0] != len(self._to_label_id):
                raise ValueError(
                    f"sem_seg has {sem_seg.shape[0]} channels, dataset {self._dataset_name!r} "
                    f"has {len(self._to_label_id)} stuff_classes"
                )
            pred = sem_seg.argmax(dim=0).to(self._cpu_device).numpy()
            with io.BytesIO() as buf:
                Image.fromarray(self._to_label_id[pred]).save(buf, format="PNG")
                png = buf.getvalue()
            self._predictions.append(
                {"core": core_name(inp["file_name"]), "file_name": inp["file_name"], "png": png}
            )

    def evaluate(self) -> Optional[Dict[str, Dict[str, float]]]:
        predictions = self._gathered()
        if predictions is None:
            return None
        predictions = self._unique_by_image(predictions)
        gt_files = self._ground_truth(predictions, "labelIds.png")
        import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval

        with self._working_dir() as work_dir:
            logger.info(
                f"Writing {len(predictions)} Cityscapes label-id predictions to {work_dir} ..."
            )
            pred_files = []
            for p in predictions:
                path = os.path.join(work_dir, f"{p['core']}_pred.png")
                with open(path, "wb") as f:
                    f.write(p["png"])
                pred_files.append(path)
            args = cityscapes_args(
                cs_eval,
                predictionPath=work_dir,
                predictionWalk=None,
                exportFile=os.path.join(work_dir, "resultPixelLevelSemanticLabeling.json"),
                JSONOutput=bool(self._output_dir),  # kept only beside kept predictions
                quiet=True,
                colorized=False,
                bold="",
                nocol="",
                evalInstLevelScore=True,
                evalPixelAccuracy=False,
            )
            logger.info(
                f"Running cityscapesscripts evalPixelLevelSemanticLabeling on "
                f"{len(gt_files)} images ..."
            )
            results = run_cityscapes(cs_eval.evaluateImgLists, pred_files, gt_files, args)

        res = {
            "IoU": 100.0 * results["averageScoreClasses"],
            "iIoU": 100.0 * results["averageScoreInstClasses"],
            "IoU_sup": 100.0 * results["averageScoreCategories"],
            "iIoU_sup": 100.0 * results["averageScoreInstCategories"],
        }
        for name in self._metadata.stuff_classes:
            if name in results["classScores"]:
                res[f"IoU-{name}"] = 100.0 * results["classScores"][name]
        logger.info(
            "Cityscapes semantic results:\n"
            + "\n".join(f"  {k:<20} {v:8.3f}" for k, v in res.items())
        )
        return OrderedDict(sem_seg=res)
