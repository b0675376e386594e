"""Instance heads: subdivision vs dense references, edge cases, build-time errors."""
import d2ext  # noqa: F401

import pytest
import torch
from torch.nn import functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from d2ext.layers import point_sample
from d2ext_projects.pointrend import ImplicitPointRendMaskHead, PointRendMaskHead
from d2ext_projects.pointrend.point_features import regular_grid_coords

from .conftest import IMPLICIT, INSTANCE, tiny_cfg

SHAPES = {"p2": ShapeSpec(channels=32, stride=4), "p3": ShapeSpec(channels=32, stride=8)}


def _head(config=INSTANCE, *opts):
    cfg = tiny_cfg(config, *opts)
    cls = PointRendMaskHead if config == INSTANCE else ImplicitPointRendMaskHead
    return cls(cfg, SHAPES)


def _features(n=2, h=16, w=20):
    torch.manual_seed(0)
    return {"p2": torch.randn(n, 32, h, w), "p3": torch.randn(n, 32, h // 2, w // 2)}


def _detections(boxes, classes, size=(64, 80)):
    inst = Instances(size)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.pred_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def _proposals(boxes, classes, masks, size=(64, 80)):
    inst = Instances(size)
    inst.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    inst.gt_masks = masks
    return inst


# ---------------------------------------------------------------- subdivision

def _smooth_field(coords):  # (R, P, 2) -> (R, 1, P): a circle of radius 0.3, box-relative
    d = ((coords - 0.5) ** 2).sum(-1).sqrt()
    return (20 * (0.3 - d)).unsqueeze(1)


def test_subdivision_with_every_cell_recomputed_equals_dense_prediction():
    head = _head(INSTANCE, "MODEL.POINT_HEAD.SUBDIVISION_STEPS", "3", "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "4096")
    coarse = torch.randn(2, 1, 7, 7)
    out = head.subdivide(coarse, _smooth_field)
    assert out.shape == (2, 1, 56, 56)
    dense = _smooth_field(regular_grid_coords(56, 2)).reshape(2, 1, 56, 56)
    torch.testing.assert_close(out, dense)


def test_subdivision_recomputes_exactly_the_most_uncertain_cells():
    head = _head(INSTANCE, "MODEL.POINT_HEAD.SUBDIVISION_STEPS", "2", "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "30")
    torch.manual_seed(3)
    coarse = torch.randn(3, 1, 7, 7) * 3
    out = head.subdivide(coarse, _smooth_field)
    # reference: per box, a plain sort of the upsampled map's uncertainty
    ref = coarse.clone()
    for side in (14, 28):
        ref = F.interpolate(ref, size=(side, side), mode="bilinear", align_corners=False)
        dense = _smooth_field(regular_grid_coords(side, 3)).reshape(3, side * side)
        flat = ref.reshape(3, side * side).clone()
        for r in range(3):
            order = torch.argsort(-flat[r].abs(), descending=True, stable=True)[:30]
            flat[r, order] = dense[r, order]
        ref = flat.reshape(3, 1, side, side)
    torch.testing.assert_close(out, ref)


def test_default_subdivision_renders_224_masks_of_the_predicted_class():
    head = _head().eval()
    feats = _features()
    dets = [_detections([[4, 4, 40, 30], [10, 20, 70, 60]], [2, 0]), _detections([[0, 0, 20, 20]], [1])]
    with torch.no_grad():
        out = head(feats, dets)
    assert out[0].pred_masks.shape == (2, 1, 224, 224) and out[1].pred_masks.shape == (1, 1, 224, 224)
    assert 0 <= out[0].pred_masks.min() and out[0].pred_masks.max() <= 1


# ---------------------------------------------------------------- edge cases

def test_no_detections_do_no_work(monkeypatch):
    for config in (INSTANCE, IMPLICIT):
        head = _head(config).eval()
        calls = []
        monkeypatch.setattr(head, "box_features", lambda *a: calls.append(a))
        out = head(_features(), [_detections([], []), _detections([], [])])
        assert not calls
        assert out[0].pred_masks.shape == (0, 1, 224, 224)


def test_image_without_detections_beside_one_with():
    head = _head().eval()
    with torch.no_grad():
        out = head(_features(), [_detections([], []), _detections([[0, 0, 30, 30]], [1])])
    assert out[0].pred_masks.shape == (0, 1, 224, 224) and out[1].pred_masks.shape == (1, 1, 224, 224)


def _train_step(head, instances):
    head.train()
    with EventStorage():
        losses = head(_features(), instances)
    total = sum(losses.values())
    total.backward()
    return losses


@pytest.mark.parametrize("config", [INSTANCE, IMPLICIT], ids=["pointrend", "implicit"])
def test_batch_without_foreground_trains(config):
    head = _head(config)
    losses = _train_step(head, [_proposals([], [], BitMasks(torch.zeros(0, 64, 80, dtype=torch.bool)))] * 2)
    assert all(torch.isfinite(v) and v == 0 for k, v in losses.items() if k != "loss_l2")
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


@pytest.mark.parametrize("config", [INSTANCE, IMPLICIT], ids=["pointrend", "implicit"])
def test_one_pixel_objects_train(config):
    head = _head(config)
    masks = torch.zeros(2, 64, 80, dtype=torch.bool)
    masks[0, 10, 12] = True
    masks[1, 40, 41] = True
    inst = _proposals([[11, 9, 13, 11], [40, 39, 42, 41]], [0, 2], BitMasks(masks))
    losses = _train_step(head, [inst, _proposals([], [], BitMasks(masks[:0]))])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask_point"] > 0


def test_implicit_l2_is_detectron2s_mean_over_all_predicted_parameters():
    head = _head(IMPLICIT)
    seen = []
    head.parameter_head.register_forward_hook(lambda m, i, out: seen.append(out.detach()))
    masks = torch.zeros(2, 64, 80, dtype=torch.bool)
    masks[:, 10:30, 12:40] = True
    inst = _proposals([[10, 8, 42, 32], [5, 5, 60, 50]], [0, 2], BitMasks(masks))
    losses = _train_step(head, [inst])
    (params,) = seen  # (R, num_params)
    assert params.shape[0] == 2 and params.shape[1] > 1
    expected = head.params_l2_regularizer * (params ** 2).mean()
    torch.testing.assert_close(losses["loss_l2"].detach(), expected)


def test_polygon_ground_truth_is_converted():
    head = _head()
    square = [[8.0, 8.0, 40.0, 8.0, 40.0, 30.0, 8.0, 30.0]]
    bits = torch.zeros(1, 64, 80, dtype=torch.bool)
    bits[0, 8:30, 8:40] = True
    boxes = [[4, 4, 44, 34]]
    torch.manual_seed(5)
    loss_poly = _train_step(head, [_proposals(boxes, [1], PolygonMasks([square]))])["loss_mask_point"]
    head.zero_grad()
    torch.manual_seed(5)
    loss_bits = _train_step(head, [_proposals(boxes, [1], BitMasks(bits))])["loss_mask_point"]
    assert abs(loss_poly.item() - loss_bits.item()) < 0.05


def test_point_loss_uses_labels_sampled_at_the_points(monkeypatch):
    """The point labels are the box's GT mask at the selected points (bilinear at the edge)."""
    from d2ext_projects.pointrend import mask_head

    head = _head(INSTANCE)
    masks = torch.zeros(1, 64, 80, dtype=torch.bool)
    masks[0, :, :40] = True  # left half of the image
    inst = _proposals([[20, 10, 60, 50]], [1], BitMasks(masks))
    seen = {}
    bce, select = F.binary_cross_entropy_with_logits, mask_head.uncertain_points_with_randomness

    def spy_bce(logits, labels, reduction):
        seen["labels"] = labels
        return bce(logits, labels, reduction=reduction)

    def spy_select(*args):
        seen["coords"] = select(*args)
        return seen["coords"]

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", spy_bce)
    monkeypatch.setattr(mask_head, "uncertain_points_with_randomness", spy_select)
    _train_step(head, [inst])
    assert seen["coords"].shape == (1, 196, 2)
    x = 20 + 40 * seen["coords"][0, :, 0]
    expected = (40 - x).clamp(-0.5, 0.5) + 0.5  # 1 left of x = 40, 0 right, linear across the edge pixel
    torch.testing.assert_close(seen["labels"][0], expected)


# ---------------------------------------------------------------- build-time checks

def test_num_classes_mismatch_is_a_build_error_naming_both_keys():
    for config in (INSTANCE, IMPLICIT):
        cfg = tiny_cfg(config, "MODEL.POINT_HEAD.NUM_CLASSES", "80")
        with pytest.raises(ValueError, match=r"POINT_HEAD\.NUM_CLASSES=80.*ROI_HEADS\.NUM_CLASSES=3"):
            build_model(cfg)
    # a class-agnostic point head has one output whatever NUM_CLASSES says
    cfg = tiny_cfg(INSTANCE, "MODEL.POINT_HEAD.NUM_CLASSES", "80", "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK", "True")
    assert build_model(cfg).roi_heads.mask_head.point_head.num_classes == 1


def test_pooled_features_are_refused_with_the_key_to_change():
    cfg = tiny_cfg(INSTANCE, "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2")
    with pytest.raises(ValueError, match="POOLER_TYPE"):
        build_model(cfg)


def test_point_head_name_must_fit_the_mask_head():
    with pytest.raises(ValueError, match="ImplicitPointHead"):
        build_model(tiny_cfg(IMPLICIT, "MODEL.POINT_HEAD.NAME", "StandardPointHead"))
    with pytest.raises(ValueError, match="ImplicitPointRendMaskHead"):
        build_model(tiny_cfg(INSTANCE, "MODEL.POINT_HEAD.NAME", "ImplicitPointHead"))


def test_class_agnostic_and_coarse_only_variants_run():
    head = _head(INSTANCE, "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK", "True", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "True")
    assert head.coarse_head.num_classes == 1 and head.point_head.num_classes == 1
    with torch.no_grad():
        out = head.eval()(_features(), [_detections([[0, 0, 30, 30]], [2]), _detections([], [])])
    assert out[0].pred_masks.shape == (1, 1, 224, 224)
    coarse_only = _head(INSTANCE, "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", "False").eval()
    assert coarse_only.point_head is None
    with torch.no_grad():
        out = coarse_only(_features(), [_detections([[0, 0, 30, 30]], [2]), _detections([], [])])
    assert out[0].pred_masks.shape == (1, 1, 7, 7)
