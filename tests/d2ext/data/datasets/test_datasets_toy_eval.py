"""The toy metadata works with detectron2's evaluators: the ground truth, fed back as
predictions, scores mask AP = PQ = mIoU = 100 on one non-separated panoptic dataset."""

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image

import d2ext  # noqa: F401
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator, COCOPanopticEvaluator, SemSegEvaluator
from detectron2.structures import Boxes, BoxMode, Instances

from d2ext.data.datasets import toy

NAME = "toy_panoptic_val"


def _instances(d):
    anns = d["annotations"]
    masks = (
        np.stack([mask_util.decode(a["segmentation"]) for a in anns])
        if anns
        else np.zeros((0, 256, 256))
    )
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    inst = Instances((d["height"], d["width"]))
    inst.pred_masks = torch.from_numpy(masks).bool()
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.ones(len(anns))
    inst.pred_classes = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
    return inst


def _panoptic(d):
    rgb = np.array(Image.open(d["pan_seg_file_name"])).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    out, segments = np.zeros(ids.shape, np.int32), []
    for k, s in enumerate(d["segments_info"], start=1):
        out[ids == s["id"]] = k
        segments.append({"id": k, "category_id": s["category_id"], "isthing": s["isthing"]})
    return torch.from_numpy(out), segments


def _sem_seg(d, num_classes):
    labels = torch.from_numpy(np.array(Image.open(d["sem_seg_file_name"])).astype(np.int64))
    return torch.nn.functional.one_hot(labels, num_classes).permute(2, 0, 1).float()


def test_ground_truth_scores_perfectly_with_detectron2_evaluators(small_toy, tmp_path):
    toy.register_toy_datasets(small_toy)
    dicts = DatasetCatalog.get(NAME)
    num_classes = len(MetadataCatalog.get(NAME).stuff_classes)
    evaluators = {
        "segm": COCOEvaluator(
            NAME,
            tasks=("segm",),
            distributed=False,
            output_dir=str(tmp_path / "coco"),
            use_fast_impl=False,
        ),
        "panoptic_seg": COCOPanopticEvaluator(NAME, output_dir=str(tmp_path / "pan")),
        "sem_seg": SemSegEvaluator(NAME, distributed=False),
    }
    for e in evaluators.values():
        e.reset()
    for d in dicts:
        outputs = {
            "instances": _instances(d),
            "panoptic_seg": _panoptic(d),
            "sem_seg": _sem_seg(d, num_classes),
        }
        for e in evaluators.values():
            e.process([d], [outputs])
    assert evaluators["segm"].evaluate()["segm"]["AP"] == 100.0
    assert evaluators["panoptic_seg"].evaluate()["panoptic_seg"]["PQ"] == 100.0
    assert evaluators["sem_seg"].evaluate()["sem_seg"]["mIoU"] == 100.0
