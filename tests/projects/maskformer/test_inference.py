"""Inference: semantic scores, panoptic merge against a loop-over-queries reference,
instance top-k, and the output format of the meta-architecture."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Instances

from d2ext_projects.maskformer.inference import (
    instance_inference,
    mask_boxes,
    panoptic_inference,
    semantic_inference,
)


def random_predictions(seed, q=8, k=4, size=(12, 10), no_object_bias=0.0):
    g = torch.Generator().manual_seed(seed)
    mask_cls = torch.randn(q, k + 1, generator=g) * 3
    mask_cls[:, -1] += no_object_bias
    mask_pred = torch.randn(q, *size, generator=g) * 4
    return mask_cls, mask_pred


def reference_panoptic(mask_cls, mask_pred, thing_ids, object_mask_threshold, overlap_threshold):
    """MaskFormer's merge written as a loop over the kept queries."""
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, -1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    scores, labels, masks = scores[keep], labels[keep], mask_pred[keep].sigmoid()
    panoptic = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32)
    info = []
    if len(labels) == 0:
        return panoptic, info
    owner = (scores[:, None, None] * masks).argmax(0)
    stuff_ids = {}
    next_id = 0
    for k in range(len(labels)):
        c = int(labels[k])
        isthing = c in thing_ids
        mask = owner == k
        area, full = int(mask.sum()), int((masks[k] >= 0.5).sum())
        if area == 0 or full == 0 or area / full < overlap_threshold:
            continue
        if not isthing and c in stuff_ids:
            panoptic[mask] = stuff_ids[c]
            continue
        next_id += 1
        if not isthing:
            stuff_ids[c] = next_id
        panoptic[mask] = next_id
        info.append({"id": next_id, "category_id": c, "isthing": isthing})
    return panoptic, info


@pytest.mark.parametrize("thresholds", [(0.0, 0.0), (0.4, 0.5), (0.7, 0.8)])
def test_panoptic_equals_reference(thresholds):
    thing_ids = [0, 1]
    for seed in range(40):
        mask_cls, mask_pred = random_predictions(seed, no_object_bias=seed % 3 - 1.0)
        got_seg, got_info = panoptic_inference(
            mask_cls,
            mask_pred,
            thing_ids=torch.tensor(thing_ids),
            object_mask_threshold=thresholds[0],
            overlap_threshold=thresholds[1],
        )
        ref_seg, ref_info = reference_panoptic(mask_cls, mask_pred, thing_ids, *thresholds)
        assert got_seg.dtype == torch.int32 and got_seg.shape == mask_pred.shape[-2:]
        assert torch.equal(got_seg, ref_seg), seed
        assert got_info == ref_info, seed
        # every segment id in the map has its info, and back
        assert set(np.unique(got_seg.numpy())) - {0} == {s["id"] for s in got_info}


def test_panoptic_merges_stuff_of_one_class():
    mask_cls = torch.full((3, 3), -10.0)
    mask_cls[:, 1] = 10.0  # all three queries: class 1 (stuff)
    mask_pred = torch.full((3, 4, 6), -10.0)
    mask_pred[0, :, :2] = mask_pred[1, :, 2:4] = mask_pred[2, :, 4:] = 10.0
    seg, info = panoptic_inference(
        mask_cls, mask_pred, thing_ids=torch.tensor([0]), object_mask_threshold=0.5, overlap_threshold=0.5
    )
    assert info == [{"id": 1, "category_id": 1, "isthing": False}]
    assert (seg == 1).all()
    # as things, they are three segments
    seg, info = panoptic_inference(
        mask_cls, mask_pred, thing_ids=torch.tensor([1]), object_mask_threshold=0.5, overlap_threshold=0.5
    )
    assert [s["id"] for s in info] == [1, 2, 3] and all(s["isthing"] for s in info)
    assert seg[:, 0].eq(1).all() and seg[:, 3].eq(2).all() and seg[:, 5].eq(3).all()


def test_panoptic_nothing_kept():
    mask_cls = torch.zeros(4, 3)
    mask_cls[:, -1] = 10.0  # every query: no object
    seg, info = panoptic_inference(
        mask_cls, torch.randn(4, 5, 5), thing_ids=None, object_mask_threshold=0.0, overlap_threshold=0.0
    )
    assert info == [] and seg.shape == (5, 5) and (seg == 0).all() and seg.dtype == torch.int32


def test_semantic_inference():
    mask_cls, mask_pred = random_predictions(0)
    sem = semantic_inference(mask_cls, mask_pred)
    assert sem.shape == (4, 12, 10)
    expected = sum(
        F.softmax(mask_cls[q], -1)[:-1, None, None] * mask_pred[q].sigmoid()[None] for q in range(8)
    )
    torch.testing.assert_close(sem, expected)


def test_instance_inference_format_and_thing_filter():
    mask_cls, mask_pred = random_predictions(1, q=6, k=4)
    result = instance_inference(mask_cls, mask_pred, topk=5, thing_ids=torch.tensor([0, 2]))
    assert isinstance(result, Instances) and result.image_size == (12, 10) and len(result) == 5
    assert set(result.pred_classes.tolist()) <= {0, 2}
    assert result.pred_masks.dtype == torch.bool and result.pred_masks.shape == (5, 12, 10)
    assert (result.scores >= 0).all() and (result.scores <= 1).all()
    # expected: the 5 (query, thing class) pairs of highest class probability,
    # score = probability x mean sigmoid over the mask's pixels
    prob = F.softmax(mask_cls, -1)
    candidates = []
    for q in range(6):
        binary = mask_pred[q] > 0
        mask_score = (mask_pred[q].sigmoid() * binary).sum() / (binary.sum() + 1e-6)
        for c in (0, 2):
            candidates.append((prob[q, c].item(), c, (prob[q, c] * mask_score).item()))
    top = sorted(candidates, reverse=True)[:5]
    got = sorted(zip(result.pred_classes.tolist(), result.scores.tolist()))
    expected = sorted((c, score) for _, c, score in top)
    assert [c for c, _ in got] == [c for c, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], rel=1e-5)
    expected_boxes = BitMasks(result.pred_masks).get_bounding_boxes().tensor
    torch.testing.assert_close(result.pred_boxes.tensor, expected_boxes)


def test_instance_inference_all_classes_and_topk_cap():
    mask_cls, mask_pred = random_predictions(2, q=3, k=2)
    result = instance_inference(mask_cls, mask_pred, topk=100, thing_ids=None)
    assert len(result) == 6  # Q x K candidates
    assert sorted((result.pred_classes).tolist()) == [0, 0, 0, 1, 1, 1]


def test_instance_inference_things_after_topk_drops_stuff_from_the_top_k():
    """Mask2Former's selection: the top k of all (query, class) pairs, then stuff dropped."""
    mask_cls, mask_pred = random_predictions(4, q=6, k=4)
    things = torch.tensor([0, 2])
    result = instance_inference(mask_cls, mask_pred, topk=8, thing_ids=things, things_after_topk=True)
    prob = F.softmax(mask_cls, -1)[:, :-1]
    top = prob.flatten().topk(8).indices
    expected = sorted(int(i % 4) for i in top if int(i % 4) in (0, 2))
    assert 0 < len(expected) < 8  # the top 8 holds both things and stuff: the rules differ
    assert sorted(result.pred_classes.tolist()) == expected
    competing = instance_inference(mask_cls, mask_pred, topk=8, thing_ids=things)
    assert len(competing) == 8 and len(result) == len(expected)


def test_mask_boxes_matches_detectron2_and_handles_empty():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(5, 9, 7, generator=g) > 0.8
    masks[2] = False
    torch.testing.assert_close(mask_boxes(masks), BitMasks(masks).get_bounding_boxes().tensor)
    assert mask_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)


def test_panoptic_mask_on_pixels_only_voids_pixels_whose_owner_mask_is_off():
    """Mask2Former's rule: query 0 owns every pixel (the only kept query), but its
    mask is on only in the left half: MaskFormer's merge gives it all pixels,
    Mask2Former's only the left half (the rest void)."""
    mask_cls = torch.tensor([[10.0, -10.0, -10.0], [-10.0, -10.0, 10.0]])  # query 1: no object
    mask_pred = torch.full((2, 4, 6), -10.0)
    mask_pred[0, :, :3] = 10.0
    mask_pred[0, :, 3:] = -0.5  # off (sigmoid 0.38) yet the largest score there
    opts = dict(thing_ids=torch.tensor([0]), object_mask_threshold=0.5, overlap_threshold=0.0)
    seg, info = panoptic_inference(mask_cls, mask_pred, **opts)
    assert (seg == 1).all() and len(info) == 1
    seg, info = panoptic_inference(mask_cls, mask_pred, mask_on_pixels_only=True, **opts)
    assert (seg[:, :3] == 1).all() and (seg[:, 3:] == 0).all() and len(info) == 1
    # a query on only where another owns the pixels gives no segment (MaskFormer's: one)
    mask_cls = torch.tensor([[10.0, -10.0, -10.0], [10.0, -10.0, -10.0]])  # two things
    mask_pred = torch.full((2, 4, 6), -10.0)
    mask_pred[0, :, :3] = 10.0
    mask_pred[1, :, 0] = 0.4  # on, but query 0 owns column 0
    mask_pred[1, :, 3:] = -0.5  # off, yet it owns columns 3-5
    seg, info = panoptic_inference(mask_cls, mask_pred, **opts)
    assert len(info) == 2 and (seg[:, 3:] == 2).all()
    seg, info = panoptic_inference(mask_cls, mask_pred, mask_on_pixels_only=True, **opts)
    assert len(info) == 1 and (seg[:, :3] == 1).all() and (seg[:, 3:] == 0).all()
