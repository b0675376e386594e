"""PointRendSemSegHead: dense references, ignore labels, build-time checks."""
import d2ext  # noqa: F401

import pytest
import torch
from torch.nn import functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

from d2ext_projects.pointrend import PointRendSemSegHead
from d2ext_projects.pointrend.point_features import regular_grid_coords
from d2ext_projects.pointrend.semantic_seg import point_sample_labels

from .conftest import SEMANTIC, tiny_cfg

SHAPES = {f"p{i}": ShapeSpec(channels=32, stride=2 ** i) for i in range(2, 6)}


def _head(*opts):
    return PointRendSemSegHead(tiny_cfg(SEMANTIC, *opts), SHAPES)


def _features(n=2, h=64, w=96):
    torch.manual_seed(0)
    return {f"p{i}": torch.randn(n, 32, h // 2 ** i, w // 2 ** i) for i in range(2, 6)}


def test_point_labels_at_cell_centres_equal_indexing_and_keep_ignore():
    labels = torch.randint(0, 5, (2, 6, 7))
    labels[0, 2, 3] = 255
    ys, xs = torch.meshgrid(torch.arange(6), torch.arange(7), indexing="ij")
    perm = torch.randperm(42)
    ys, xs = ys.reshape(-1)[perm], xs.reshape(-1)[perm]
    coords = torch.stack([(xs + 0.5) / 7, (ys + 0.5) / 6], -1).expand(2, -1, -1)
    got = point_sample_labels(labels, coords)
    assert torch.equal(got, labels[:, ys, xs])
    assert (got[0][(ys == 2) & (xs == 3)] == 255).all()


def test_subdivision_with_every_cell_recomputed_equals_dense_point_head():
    head = _head("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", str(64 * 96)).eval()
    feats = _features()
    with torch.no_grad():
        logits, _ = head(feats)
        coarse = head.coarse_sem_seg_head.layers(feats)
        grid = torch.stack(torch.meshgrid((torch.arange(64) + 0.5) / 64, (torch.arange(96) + 0.5) / 96, indexing="ij")[::-1], -1)
        dense = head._predict_points(feats, coarse, grid.reshape(1, -1, 2).expand(2, -1, -1))
    assert logits.shape == (2, 5, 64, 96)
    torch.testing.assert_close(logits, dense.reshape(2, 5, 64, 96))


def test_subdivision_recomputes_the_smallest_margins_only():
    head = _head("MODEL.POINT_HEAD.SUBDIVISION_STEPS", "1", "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "100").eval()
    feats = _features()
    with torch.no_grad():
        logits, _ = head(feats)
        coarse = head.coarse_sem_seg_head.layers(feats)  # (2, 5, 16, 24)
        # reference: per image, sort the top-two margins of the upsampled map, recompute 100 cells
        ref = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False).reshape(2, 5, -1)
        centres = torch.stack(torch.meshgrid((torch.arange(32) + 0.5) / 32, (torch.arange(48) + 0.5) / 48, indexing="ij")[::-1], -1).reshape(-1, 2)
        for n in range(2):
            top2 = ref[n].topk(2, dim=0).values
            chosen = (top2[0] - top2[1]).argsort()[:100]
            values = head._predict_points({k: v[n : n + 1] for k, v in feats.items()}, coarse[n : n + 1], centres[chosen][None])
            ref[n][:, chosen] = values[0]
        ref = F.interpolate(ref.reshape(2, 5, 32, 48), size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, ref)


def test_training_with_every_label_ignored_gives_zero_losses():
    head = _head().train()
    targets = torch.full((2, 64, 96), 255)
    _, losses = head(_features(), targets)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()
    targets[:, :, :40] = 2
    _, losses = head(_features(), targets)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


def test_num_classes_mismatch_is_a_build_error_naming_both_keys():
    cfg = tiny_cfg(SEMANTIC, "MODEL.POINT_HEAD.NUM_CLASSES", "19")
    with pytest.raises(ValueError, match=r"POINT_HEAD\.NUM_CLASSES=19.*SEM_SEG_HEAD\.NUM_CLASSES=5"):
        build_model(cfg)
