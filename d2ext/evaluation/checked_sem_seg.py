"""detectron2's SemSegEvaluator, refusing ground truth it would miscount.

detectron2 0.6 maps ``ignore_label`` to an extra bin and adds every other GT
value to the confusion matrix as is: a value >= the number of classes lands in
another class's bin (the mIoU is silently wrong) or, if large, breaks the
matrix reshape far from the cause. Here each GT file is read and checked
before detectron2's ``process`` reads it again, so the metrics stay exactly
detectron2's; the second decode of a label PNG is cheap next to the model's
forward pass.
"""
from __future__ import annotations

from typing import List

import numpy as np
from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.file_io import PathManager
from PIL import Image

from ..data.datasets.checks import UNREADABLE_IMAGE_ERRORS, DatasetError, check_label_values

__all__ = ["CheckedSemSegEvaluator"]

class CheckedSemSegEvaluator(SemSegEvaluator):
    """SemSegEvaluator whose ``process`` raises DatasetError, naming the GT file,
    its image, the bad values, the class range and the ignore label, when a GT
    map holds a value that is neither a class id nor ``ignore_label``, or when
    the GT file cannot be decoded."""

    def process(self, inputs: List[dict], outputs) -> None:
        for inp in inputs:
            self._check_ground_truth(inp["file_name"])
        super().process(inputs, outputs)

    def _check_ground_truth(self, image_path: str) -> None:
        gt_path = self.input_file_to_gt_file[image_path]
        try:
            with PathManager.open(gt_path, "rb") as f:
                gt = np.array(Image.open(f))
        except UNREADABLE_IMAGE_ERRORS as e:
            raise DatasetError(
                f"{gt_path}: cannot read this ground-truth label map (labels of image "
                f"{image_path}, dataset {self._dataset_name!r}): {type(e).__name__}: {e}"
            ) from e
        try:
            check_label_values(gt, self._num_classes, self._ignore_label, gt_path, image_path)
        except DatasetError as e:
            raise DatasetError(f"{e} [evaluating dataset {self._dataset_name!r}]") from None
