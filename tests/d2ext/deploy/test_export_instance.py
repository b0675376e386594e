"""Mask R-CNN and PointRend (instance) through detectron2's TracingAdapter, on ONNX Runtime
and TorchScript: the same detections and pasted masks as eager.

Mask R-CNN runs on an image other than the one traced (the number of detections is
data-dependent, and the graph follows it). PointRend's graph keeps the traced number of
detections (its mask head sizes tensors with Python ints from len(boxes)): it matches on
the traced image, and on another image it fails, which a strict xfail records.
"""
import pytest
import torch

from d2ext.deploy import export_model, instances_from_outputs, load_exported
from d2ext.layers import fold_batch_norms

from .conftest import build_tiny, onnx_op_types, random_image

H, W = 96, 128
OPTS = [
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.3", "TEST.DETECTIONS_PER_IMAGE", "20",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "16", "MODEL.POINT_HEAD.FC_DIM", "32",
]
MASK_RCNN = "configs/baselines/toy/mask_rcnn_R18_FPN_toy.yaml"
POINTREND = "configs/pointrend/toy/pointrend_rcnn_R18_FPN_toy.yaml"
TRACE_SEED, OTHER_SEED = 1, 2


def _export_and_compare(config: str, fmt: str, tmp_path, test_seed: int) -> None:
    model = build_tiny(config, OPTS)
    image = random_image(H, W, seed=test_seed)
    with torch.no_grad():
        reference = model([{"image": image, "height": H, "width": W}])[0]["instances"]
    assert len(reference) > 0
    assert fold_batch_norms(model) > 0
    trace_image = random_image(H, W, seed=TRACE_SEED)
    if test_seed != TRACE_SEED:  # otherwise a count baked into the graph would go unseen
        with torch.no_grad():
            traced_count = len(model([{"image": trace_image}])[0]["instances"])
        assert traced_count != len(reference)
    meta = export_model(model, trace_image, str(tmp_path), fmt=fmt, task="instances")
    assert meta["input_shape"] == [3, H, W]
    out = instances_from_outputs(load_exported(str(tmp_path), threads=1)(image), H, W)

    assert len(out) == len(reference)
    assert torch.equal(out.pred_classes, reference.pred_classes)
    assert torch.allclose(out.scores, reference.scores, atol=1e-3)
    assert torch.allclose(out.pred_boxes.tensor, reference.pred_boxes.tensor, atol=1e-2)  # pixels
    agreement = (out.pred_masks == reference.pred_masks).float().mean()
    assert agreement >= 0.999, float(agreement)
    if fmt == "onnx":
        ops = onnx_op_types(str(tmp_path / "model.onnx"))
        assert "BatchNormalization" not in ops, ops
        assert ops.get("RoiAlign", 0) > 0 and ops.get("NonMaxSuppression", 0) > 0, ops


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_mask_rcnn_export_matches_eager_on_another_image(fmt, tmp_path):
    _export_and_compare(MASK_RCNN, fmt, tmp_path, OTHER_SEED)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_pointrend_export_matches_eager_on_the_traced_image(fmt, tmp_path):
    _export_and_compare(POINTREND, fmt, tmp_path, TRACE_SEED)


@pytest.mark.xfail(strict=True, raises=Exception, reason=(
    "PointRend's mask head fixes the number of detections at trace time: "
    "box_features uses num = sum(len(b) for b in boxes) for regular_grid_coords and reshape, "
    "sample_box_features loops over images with len(b) (projects/pointrend)"))
def test_pointrend_onnx_export_on_another_detection_count(tmp_path):
    _export_and_compare(POINTREND, "onnx", tmp_path, OTHER_SEED)
