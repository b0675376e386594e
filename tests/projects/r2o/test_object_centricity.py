"""Object-centricity: matched IoU on hand-made cases and against a brute-force matcher,
the SLIC-colour control, and a smoke run of the evaluation on the tiny toy set
(the tool's: tests/tools/test_r2o_object_centricity.py)."""
import itertools
import os

import pytest
import torch

import d2ext_projects  # noqa: F401
from d2ext.engine.setup import load_cfg
from d2ext_projects.r2o.object_centricity import (
    ObjectCentricity,
    evaluate_object_centricity,
    hard_clusters,
    image_score,
    matched_ious,
    slic_color_maps,
    thing_flags,
)
from tests.conftest import REPO_ROOT

R2O_TOY = os.path.join(REPO_ROOT, "configs", "r2o", "toy", "r2o_R18_toy.yaml")
# A small whole image and few superpixels: the smoke runs check wiring, not quality.
SMALL = [
    "MODEL.R2O.VIEWS.WHOLE_SIZE", "64",
    "MODEL.R2O.VIEWS.CROP_SIZE", "32",
    "MODEL.R2O.VIEWS.SLIC_SEGMENTS", "32",
    "MODEL.R2O.PROJECTOR_HIDDEN", "32",
    "MODEL.R2O.PREDICTOR_HIDDEN", "32",
    "MODEL.R2O.PROJECTOR_DIM", "16",
]


def halves(size=8):
    """(2, size, size) bool: the left and the right half."""
    left = torch.zeros(size, size, dtype=torch.bool)
    left[:, : size // 2] = True
    return torch.stack([left, ~left])


def columns_split(size, at):
    """(size, size) clusters: 0 left of column ``at``, 1 from it on."""
    c = torch.ones(size, size, dtype=torch.long)
    c[:, :at] = 0
    return c


# --- matched_ious: hand-made cases ------------------------------------------------------------


def test_clusters_equal_to_segments_score_one_whatever_their_ids():
    gt = torch.zeros(3, 6, 6, dtype=torch.bool)
    gt[0, :2], gt[1, 2:4], gt[2, 4:] = True, True, True
    clusters = torch.zeros(6, 6, dtype=torch.long)
    clusters[:2], clusters[2:4], clusters[4:] = 4, 0, 2  # other ids, unused clusters 1 and 3
    assert matched_ious(gt, clusters, k=5).tolist() == [1.0, 1.0, 1.0]


def test_boundary_shifted_by_a_quarter():
    # Segments: columns 0-3 and 4-7 of 8x8 (32 px each). Clusters: columns 0-1 (16 px), 2-7 (48 px).
    # Left: 16 / 32 = 1/2 with cluster 0; right: 32 / 48 = 2/3 with cluster 1 (the swap scores 1/4 + 0).
    ious = matched_ious(halves(8), columns_split(8, 2), k=2)
    assert ious.tolist() == pytest.approx([0.5, 2 / 3])


def test_more_segments_than_clusters_leaves_one_at_zero():
    # One cluster over both halves: IoU 1/2 with either; one half gets it, the other 0.
    ious = matched_ious(halves(8), torch.zeros(8, 8, dtype=torch.long), k=1)
    assert sorted(ious.tolist()) == [0.0, 0.5]


def test_void_pixels_do_not_count_against_a_cluster():
    gt = halves(8)[:1]  # only the left half is labelled; the right half is void
    assert matched_ious(gt, torch.zeros(8, 8, dtype=torch.long), k=1).tolist() == [1.0]


def test_no_segments():
    assert matched_ious(torch.zeros(0, 4, 4, dtype=torch.bool), torch.zeros(4, 4, dtype=torch.long), 3).numel() == 0


def _brute_force(gt, clusters, k):
    """Best total IoU over every one-to-one assignment, IoUs counted pixel by pixel in Python."""
    labelled = {(y, x) for s in gt for y, x in s.nonzero().tolist()}
    seg = [set(map(tuple, s.nonzero().tolist())) for s in gt]
    clu = [{p for p in labelled if clusters[p].item() == c} for c in range(k)]
    iou = [[len(a & b) / len(a | b) if a | b else 0.0 for b in clu] for a in seg]
    n = len(seg)
    best = 0.0
    for perm in itertools.permutations(range(max(n, k)), n):
        best = max(best, sum(iou[i][c] for i, c in enumerate(perm) if c < k))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_hungarian_total_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    num_gt, k = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
    seg_of = torch.randint(-1, num_gt, (6, 6), generator=g)  # -1 = void
    gt = torch.stack([seg_of == i for i in range(num_gt)])
    gt = gt[gt.flatten(1).any(1)]
    clusters = torch.randint(0, k, (6, 6), generator=g)
    ious = matched_ious(gt, clusters, k)
    assert float(ious.sum()) == pytest.approx(_brute_force(gt, clusters, k))
    assert (ious >= 0).all() and (ious <= 1).all()


# --- hard clusters, scores ----------------------------------------------------------------------


def test_hard_clusters_upsample_then_argmax():
    left = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    maps = torch.stack([left, 1 - left])  # (2, 2, 2): cluster 0 covers the left cells
    assert torch.equal(hard_clusters(maps, (4, 4)), columns_split(4, 2))


def test_image_score_and_summary_split_things_and_stuff():
    s1 = image_score(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64), torch.tensor([True, True, False]))
    assert (s1.all, s1.things, s1.stuff) == pytest.approx((0.5, 0.75, 0.0))
    s2 = image_score(torch.tensor([0.25], dtype=torch.float64), torch.tensor([False]))  # no things
    assert s2.things is None and s2.stuff == 0.25
    acc = ObjectCentricity()
    acc.add(s1, "a.png")
    acc.add(s2, "b.png")
    summary = acc.summary()
    assert summary["miou"] == pytest.approx((0.5 + 0.25) / 2)
    assert summary["miou_things"] == pytest.approx(0.75)  # the image without things is left out
    assert summary["miou_stuff"] == pytest.approx(0.125)
    assert (summary["num_images"], summary["num_segments"], summary["num_things"]) == (2, 4, 2)
    assert acc.per_image()[1]["file_name"] == "b.png"


def test_thing_flags_from_segments_info_else_metadata():
    infos = [{"category_id": 3, "isthing": False}, {"category_id": 0, "isthing": True}]
    assert thing_flags(torch.tensor([0, 3, 1]), infos, thing_ids=[1]).tolist() == [True, False, True]


# --- SLIC colour control ------------------------------------------------------------------------


def test_slic_colour_clusters_recover_two_colours():
    whole = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    whole[0, 0, :, :4] = 200  # red left half
    whole[0, 2, :, 4:] = 200  # blue right half
    superpixels = torch.zeros(1, 8, 8, dtype=torch.long)  # quadrants 0..3
    superpixels[0, :4, 4:], superpixels[0, 4:, :4], superpixels[0, 4:, 4:] = 1, 2, 3
    maps = slic_color_maps(whole, superpixels, k=3, stride=2, num_iters=5)
    assert maps[0].shape == (3, 4, 4)
    assert torch.allclose(maps[0].sum(0), torch.ones(4, 4))
    assert maps[0][2].sum() == 0  # two distinct colours: the third cluster cannot form
    clusters = hard_clusters(maps[0], (8, 8))
    assert matched_ious(halves(8), clusters, 3).tolist() == [1.0, 1.0]


# --- smoke runs on the tiny toy set (3 val images) ------------------------------------------------


def test_evaluation_smoke_model_and_slic(tiny_toy):
    cfg = load_cfg(R2O_TOY, SMALL)
    from detectron2.modeling import build_model

    model = build_model(cfg).eval()
    for m in (model, None):
        result = evaluate_object_centricity(cfg, m, "toy_panoptic_val", k=4, num_images=2, batch_size=2)
        summary = result.summary()
        assert summary["num_images"] == 2 and summary["num_segments"] > 0
        assert 0.0 <= summary["miou"] <= 1.0

