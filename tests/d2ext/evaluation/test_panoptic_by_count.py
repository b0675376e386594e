"""PQ by ground-truth thing count: groups, hand-computed recognition quality,
and panoptic outputs from instance-only models."""
import json

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from d2ext.evaluation.panoptic_by_count import (
    PanopticByCountEvaluator,
    bin_label,
    panoptic_from_instances,
    thing_counts,
)
from tests.d2ext.evaluation import oracle

NAME = "toy_panoptic_val"


def _counts():
    with open(MetadataCatalog.get(NAME).panoptic_json) as f:
        return thing_counts(json.load(f))


def _ground_truth(dicts):
    panoptic = oracle.panoptic_from_json(MetadataCatalog.get(NAME))
    return {d["file_name"]: {"panoptic_seg": panoptic[d["image_id"]]} for d in dicts}


def _one_bin_per_count(counts):
    """Edges giving each thing count of the val split its own group (needs two counts at least)."""
    values = sorted(set(counts.values()))
    assert len(values) >= 2, f"the tiny val split needs two different thing counts, got {counts}"
    return values + [values[-1] + 1]


def test_ground_truth_scores_100_in_every_group(tiny_toy):
    dicts = DatasetCatalog.get(NAME)
    counts = _counts()
    bins = _one_bin_per_count(counts)
    res = oracle.run(PanopticByCountEvaluator(NAME, bins), dicts, _ground_truth(dicts))
    assert res["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    groups = res["panoptic_by_count"]
    assert sum(v for k, v in groups.items() if k.startswith("num_images@")) == len(dicts)
    for low, high in zip(bins, bins[1:]):
        assert groups[f"PQ_th@{bin_label(low, high)}"] == pytest.approx(100.0)


def test_a_missed_thing_lowers_only_its_group_by_hand_computed_rq(tiny_toy):
    dicts = DatasetCatalog.get(NAME)
    counts = _counts()
    bins = _one_bin_per_count(counts)
    outputs = _ground_truth(dicts)
    victim = max(dicts, key=lambda d: counts[d["image_id"]])  # the most crowded image
    ids, segments = outputs[victim["file_name"]]["panoptic_seg"]
    thing = next(s for s in segments if s["isthing"])
    ids = ids.clone()
    ids[ids == thing["id"]] = 0  # void: the thing is missed, nothing is predicted there
    outputs[victim["file_name"]] = {"panoptic_seg": (ids, [s for s in segments if s is not thing])}

    groups = oracle.run(PanopticByCountEvaluator(NAME, bins), dicts, outputs)["panoptic_by_count"]
    n = counts[victim["image_id"]]
    hit = bin_label(n, bins[bins.index(n) + 1])
    # per thing class over the group's images: TP / (TP + FN / 2), averaged over the classes
    # present (every other ground-truth thing of the group is matched exactly)
    by_class = {}
    for d in dicts:
        if counts[d["image_id"]] != n:
            continue
        for s in _ground_truth([d])[d["file_name"]]["panoptic_seg"][1]:
            if s["isthing"]:
                missed = d is victim and s["id"] == thing["id"]
                tp, fn = by_class.get(s["category_id"], (0, 0))
                by_class[s["category_id"]] = (tp + (not missed), fn + missed)
    expected_rq = 100 * np.mean([tp / (tp + 0.5 * fn) for tp, fn in by_class.values()])
    assert groups[f"RQ_th@{hit}"] == pytest.approx(expected_rq)
    assert groups[f"SQ_th@{hit}"] == pytest.approx(100.0)
    for low, high in zip(bins, bins[1:]):
        if bin_label(low, high) != hit:
            assert groups[f"PQ_th@{bin_label(low, high)}"] == pytest.approx(100.0)


def test_bins_must_increase(tiny_toy):
    with pytest.raises(ValueError, match="increasing"):
        PanopticByCountEvaluator(NAME, [5, 5, 10])


def _instances(masks, scores):
    inst = Instances((4, 6))
    inst.pred_masks = torch.as_tensor(np.stack(masks))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.long)
    inst.pred_boxes = Boxes(torch.zeros(len(scores), 4))
    return inst


def test_panoptic_from_instances_pastes_by_score_and_fills_stuff():
    a = np.zeros((4, 6), bool)
    a[:, :3] = True  # 12 px
    b = np.zeros((4, 6), bool)
    b[:, 2:5] = True  # 12 px, 4 of them under a: 1/3 overlap < 0.5, kept without them
    c = np.zeros((4, 6), bool)
    c[:, 1:3] = True  # entirely under a: dropped
    low = np.zeros((4, 6), bool)
    low[0, 5] = True  # score below the threshold: dropped
    ids, segments = panoptic_from_instances(_instances([b, a, c, low], [0.8, 0.9, 0.7, 0.1]), stuff_label=1)
    ids = ids.numpy()
    things = [s for s in segments if s["isthing"]]
    assert len(things) == 2
    first, second = things
    assert first["score"] == pytest.approx(0.9) and (ids == first["id"]).sum() == 12
    assert second["score"] == pytest.approx(0.8) and (ids == second["id"]).sum() == 8
    (stuff,) = [s for s in segments if not s["isthing"]]
    assert stuff["category_id"] == 1 and (ids == stuff["id"]).sum() == 24 - 20


def test_panoptic_from_instances_needs_masks_and_a_stuff_class():
    inst = Instances((4, 6))
    inst.scores = torch.tensor([0.9])
    with pytest.raises(ValueError, match="pred_masks"):
        panoptic_from_instances(inst, stuff_label=1)
    with pytest.raises(ValueError, match="stuff_label"):
        panoptic_from_instances(_instances([np.ones((4, 6), bool)], [0.9]), stuff_label=0)
