"""Greedy assembly: the decisions by hand, and batched == one-at-a-time
(identical results with fewer forwards), against a second, plain implementation."""
import pytest
import torch

from d2ext_projects.adaptis.assembly import greedy_assembly

H, W = 40, 50


def disc_predictor(radius_of):
    """Masks that depend only on the point: a soft disc around it."""
    ys = torch.arange(H).float()[:, None] + 0.5
    xs = torch.arange(W).float()[None, :] + 0.5
    calls = []

    def predict(points):
        calls.append(points.shape[0])
        r = torch.tensor([radius_of(p) for p in points.tolist()])
        d = ((ys[None] - points[:, 1, None, None]) ** 2 + (xs[None] - points[:, 0, None, None]) ** 2).sqrt()
        return torch.sigmoid((r[:, None, None] - d) * 2.0)

    return predict, calls


def plain_loop(points, predict, mask_thresh, overlap_thresh, min_area):
    """The reference's loop, one candidate at a time."""
    covered = torch.zeros(H, W, dtype=torch.bool)
    accepted, probs = [], []
    for i, (x, y) in enumerate(points.tolist()):
        if covered[int(y), int(x)]:
            continue
        p = predict(points[i : i + 1])[0]
        mask = p > mask_thresh
        area = int(mask.sum())
        if area < min_area or area == 0:
            continue
        if int((mask & covered).sum()) / area >= overlap_thresh:
            continue
        covered |= mask
        accepted.append(i)
        probs.append(p)
    return accepted, probs


def scene(seed, n):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(n, 2, generator=g) * torch.tensor([W, H])
    return pts, (lambda p: 1.0 + (int(p[0] * 7 + p[1] * 3) % 7))


def box_predictor(boxes):
    """Point i -> probability 0.9 inside boxes[i] = (y0, y1, x0, x1) (inclusive), 0.1 elsewhere."""
    calls = []

    def predict(points):
        calls.append(points.shape[0])
        out = torch.full((points.shape[0], H, W), 0.1)
        for k, (x, y) in enumerate(points.tolist()):
            y0, y1, x0, x1 = boxes[(x, y)]
            out[k, y0 : y1 + 1, x0 : x1 + 1] = 0.9
        return out

    return predict, calls


def test_decisions_by_hand():
    boxes = {
        (10.5, 10.5): (5, 15, 5, 15),  # 0: accepted (121 px)
        (12.5, 12.5): (5, 15, 5, 15),  # 1: inside 0's mask: skipped, no forward
        (30.5, 30.5): (30, 31, 30, 31),  # 2: 4 px < min_area 5: rejected
        (10.5, 30.5): (25, 35, 5, 15),  # 3: accepted
        (20.5, 10.5): (5, 15, 8, 22),  # 4: 88 of its 165 px covered (53%): rejected
        (40.5, 10.5): (5, 15, 10, 45),  # 5: 66 of 396 covered (17%): accepted
    }
    points = torch.tensor(list(boxes))
    predict, calls = box_predictor(boxes)
    res = greedy_assembly(points, predict, (H, W), mask_thresh=0.5, overlap_thresh=0.5, min_area=5, chunk_size=1)
    assert res.accepted == [0, 3, 5]
    assert res.num_forwards == 5 and sum(calls) == 5
    assert res.probs.shape == (3, H, W)
    # batched: the same decisions; candidate 1 is predicted for nothing in the first chunk
    predict, calls = box_predictor(boxes)
    res = greedy_assembly(points, predict, (H, W), mask_thresh=0.5, overlap_thresh=0.5, min_area=5, chunk_size=16)
    assert res.accepted == [0, 3, 5] and res.num_forwards == 1 and calls == [6]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [2, 5, 16, 100])
def test_batched_equals_sequential_with_fewer_forwards(seed, chunk):
    points, radius = scene(seed, 60)
    predict, _ = disc_predictor(radius)
    kwargs = dict(mask_thresh=0.4, overlap_thresh=0.3, min_area=10)
    expected, expected_probs = plain_loop(points, predict, **kwargs)
    one = greedy_assembly(points, predict, (H, W), chunk_size=1, **kwargs)
    batched = greedy_assembly(points, predict, (H, W), chunk_size=chunk, **kwargs)
    assert len(expected) > 3  # a scene with decisions of every kind
    assert one.accepted == expected == batched.accepted
    # the same masks (batched kernels may round the last bit differently)
    torch.testing.assert_close(batched.probs, torch.stack(expected_probs), rtol=0, atol=1e-6)
    torch.testing.assert_close(one.probs, batched.probs, rtol=0, atol=1e-6)
    assert batched.num_forwards < one.num_forwards
    assert batched.num_forwards <= -(-one.num_forwards // chunk) + len(expected)


def test_no_candidate_and_no_accepted():
    predict, calls = disc_predictor(lambda p: 0.1)
    empty = greedy_assembly(torch.zeros(0, 2), predict, (H, W), mask_thresh=0.5, overlap_thresh=0.5, min_area=1)
    assert empty.accepted == [] and empty.probs.shape == (0, H, W) and empty.num_forwards == 0
    none = greedy_assembly(torch.tensor([[5.0, 5.0]]), predict, (H, W), mask_thresh=0.5, overlap_thresh=0.5, min_area=1)
    assert none.accepted == [] and none.probs.shape == (0, H, W) and none.num_forwards == 1
