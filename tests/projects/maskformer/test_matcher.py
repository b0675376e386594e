"""Hungarian matcher: costs against a per-pair reference, assignment against brute
force, permutation invariance, non-finite costs, more targets than queries."""
import ast
import inspect
import itertools
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from detectron2.utils.events import EventStorage

import d2ext_projects.maskformer.losses as losses_module
import d2ext_projects.maskformer.matcher as matcher_module
from d2ext_projects.maskformer.matcher import HungarianMatcher, NonFiniteCostError


def random_case(seed, q, t, k=4, size=(8, 8), target_scale=1):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(q, k + 1, generator=g) * 2
    masks = torch.randn(q, *size, generator=g) * 3
    labels = torch.randint(0, k, (t,), generator=g)
    big = (size[0] * target_scale, size[1] * target_scale)
    tgt = torch.rand(t, *big, generator=g) > 0.6
    return logits, masks, labels, tgt


def reference_cost(logits, masks, labels, tgt, weights=(1.0, 20.0, 1.0)):
    """Per pair, written out: -p(class), mean sigmoid focal (torchvision's form), dice."""
    q, t = logits.shape[0], labels.shape[0]
    h, w = masks.shape[-2:]
    # target pixel -> fraction of the low-resolution cell it covers
    tgt_small = tgt.float().reshape(t, h, tgt.shape[1] // h, w, tgt.shape[2] // w).mean((2, 4))
    prob = logits.softmax(-1)
    cost = torch.zeros(q, t, dtype=torch.float64)
    for i in range(q):
        for j in range(t):
            x, y = masks[i].flatten().double(), tgt_small[j].flatten().double()
            p = x.sigmoid()
            # focal loss linear in the target (== torchvision's for binary y)
            ce1, ce0 = F.softplus(-x), F.softplus(x)
            focal = (y * 0.25 * (1 - p) ** 2 * ce1 + (1 - y) * 0.75 * p**2 * ce0).mean()
            dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
            cost[i, j] = -weights[0] * prob[i, labels[j]] + weights[1] * focal + weights[2] * dice
    return cost


def brute_force_min(cost: np.ndarray) -> float:
    """Minimum total cost over every assignment of min(Q, T) distinct pairs."""
    q, t = cost.shape
    if t == 0:
        return 0.0
    if t <= q:  # the query of each target
        rows = np.array(list(itertools.permutations(range(q), t)))
        return float(cost[rows, np.arange(t)].sum(1).min())
    cols = np.array(list(itertools.permutations(range(t), q)))  # the target of each query
    return float(cost[np.arange(q), cols].sum(1).min())


def match_one(matcher, logits, masks, labels, tgt):
    outputs = {"pred_logits": logits[None], "pred_masks": masks[None]}
    return matcher(outputs, [{"labels": labels, "masks": tgt}])[0]


def test_focal_equals_torchvision_form_for_binary_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 40, generator=g) * 3
    y = (torch.rand(5, 40, generator=g) > 0.5).float()
    p = x.sigmoid()
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    alpha_t = 0.25 * y + 0.75 * (1 - y)
    expected = (alpha_t * ce * (1 - p_t) ** 2).mean(1)
    torch.testing.assert_close(losses_module.sigmoid_focal_loss(x, y), expected)


@pytest.mark.parametrize("target_scale", [1, 2])
def test_cost_matrix_equals_per_pair_reference(target_scale):
    matcher = HungarianMatcher(1.0, 20.0, 1.0)
    for seed in range(5):
        logits, masks, labels, tgt = random_case(seed, 5, 4, target_scale=target_scale)
        cost = matcher.cost_matrix(logits, masks, labels, tgt)
        expected = reference_cost(logits, masks, labels, tgt)
        torch.testing.assert_close(cost.double(), expected, atol=1e-5, rtol=1e-5)


def test_pairwise_losses_equal_pointwise():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 30, generator=g), torch.rand(4, 30, generator=g)
    for pairwise, pointwise in [
        (losses_module.pairwise_sigmoid_focal, losses_module.sigmoid_focal_loss),
        (losses_module.pairwise_dice, losses_module.dice_loss),
    ]:
        expected = torch.stack([pointwise(x, y[j].expand_as(x)) for j in range(4)], dim=1)
        torch.testing.assert_close(pairwise(x, y), expected)


@pytest.mark.parametrize("weights", [(1.0, 20.0, 1.0), (2.0, 5.0, 0.0)])
def test_total_cost_equals_brute_force_optimum(weights):
    matcher = HungarianMatcher(*weights)
    cases = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        q, t = int(rng.integers(1, 6)), int(rng.integers(0, 7))  # includes T > Q and T = 0
        logits, masks, labels, tgt = random_case(seed, q, t)
        rows, cols = match_one(matcher, logits, masks, labels, tgt)
        assert len(rows) == len(cols) == min(q, t)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        if t == 0:
            continue
        cost = matcher.cost_matrix(logits, masks, labels, tgt).double().numpy()
        total = cost[rows.numpy(), cols.numpy()].sum()
        assert total == pytest.approx(brute_force_min(cost), abs=1e-9), (seed, q, t)
        cases += 1
    assert cases > 100


def test_more_targets_than_queries(monkeypatch):
    """Every query gets a distinct target; the cheapest Q targets are chosen; a warning is logged."""
    warnings = []
    monkeypatch.setattr(matcher_module, "log_first_n", lambda lvl, msg, **kw: warnings.append(msg))
    matcher = HungarianMatcher()
    logits, masks, labels, tgt = random_case(3, 3, 6)
    rows, cols = match_one(matcher, logits, masks, labels, tgt)
    assert rows.tolist() == [0, 1, 2]
    assert len(set(cols.tolist())) == 3 and all(0 <= c < 6 for c in cols.tolist())
    cost = matcher.cost_matrix(logits, masks, labels, tgt).double().numpy()
    assert cost[rows, cols].sum() == pytest.approx(brute_force_min(cost))
    assert len(warnings) == 1 and "6 segments but there are only 3 queries" in warnings[0]
    assert "NUM_OBJECT_QUERIES" in warnings[0]


def test_invariant_to_permutations_of_queries_and_targets():
    matcher = HungarianMatcher()
    for seed in range(20):
        q, t = 7, 5
        logits, masks, labels, tgt = random_case(seed, q, t, size=(6, 6))
        pq, pt = torch.randperm(q), torch.randperm(t)
        rows, cols = match_one(matcher, logits, masks, labels, tgt)
        rows_p, cols_p = match_one(matcher, logits[pq], masks[pq], labels[pt], tgt[pt])
        pairs = {(int(r), int(c)) for r, c in zip(rows, cols)}
        pairs_p = {(int(pq[r]), int(pt[c])) for r, c in zip(rows_p, cols_p)}
        assert pairs == pairs_p


def test_batch_of_images_matched_independently():
    matcher = HungarianMatcher()
    cases = [random_case(s, 5, t) for s, t in [(0, 2), (1, 0), (2, 4)]]
    outputs = {
        "pred_logits": torch.stack([c[0] for c in cases]),
        "pred_masks": torch.stack([c[1] for c in cases]),
    }
    indices = matcher(outputs, [{"labels": c[2], "masks": c[3]} for c in cases])
    for (rows, cols), case in zip(indices, cases):
        r1, c1 = match_one(matcher, *case)
        assert rows.tolist() == r1.tolist() and cols.tolist() == c1.tolist()
        assert rows.dtype == cols.dtype == torch.int64
    assert indices[1][0].numel() == 0


@pytest.mark.parametrize(
    "corrupt, term",
    [
        (lambda lo, m: lo.__setitem__((1, 2), float("nan")), "class cost"),
        (lambda lo, m: m.__setitem__((0, 3, 3), float("inf")), "mask (sigmoid focal) cost"),
        (lambda lo, m: m.__setitem__((2, 0, 0), float("nan")), "mask (sigmoid focal) cost"),
    ],
)
def test_non_finite_cost_raises_before_scipy(monkeypatch, corrupt, term):
    def fail(*args, **kwargs):
        raise AssertionError("a non-finite cost reached scipy")

    monkeypatch.setattr(matcher_module, "linear_sum_assignment", fail)
    logits, masks, labels, tgt = random_case(0, 4, 3)
    corrupt(logits, masks)
    outputs = {"pred_logits": torch.stack([logits, logits]), "pred_masks": torch.stack([masks, masks])}
    targets = [{"labels": labels[:0], "masks": tgt[:0]}, {"labels": labels, "masks": tgt}]
    with EventStorage(start_iter=7) as storage:
        storage.iter = 7
        with pytest.raises(NonFiniteCostError) as info:
            HungarianMatcher()(outputs, targets, where="decoder layer 3 of 6")
    message = str(info.value)
    assert term in message and "iteration 7" in message
    assert "image 1 of the batch" in message and "decoder layer 3 of 6" in message
    assert "MODEL.MASK_FORMER." in message  # the weight's key


def test_dice_term_named_when_only_it_is_non_finite(monkeypatch):
    matcher = HungarianMatcher(1.0, 0.0, 1.0)  # no focal term
    logits, masks, labels, tgt = random_case(0, 3, 2)
    masks[1, 0, 0] = float("nan")
    with pytest.raises(NonFiniteCostError, match=r"the dice cost .*outside training"):
        match_one(matcher, logits, masks, labels, tgt)


def test_one_cost_call_per_image_with_all_queries_and_targets(monkeypatch):
    """Costs of an image come from one batched call: (Q, T) at once, not per query or target."""
    calls = []
    original = HungarianMatcher.cost_terms

    def spy(self, logits, masks, labels, tgt):
        terms = original(self, logits, masks, labels, tgt)
        calls.append({k: tuple(v.shape) for k, v in terms.items()})
        return terms

    monkeypatch.setattr(HungarianMatcher, "cost_terms", spy)
    cases = [random_case(s, 6, t) for s, t in [(0, 3), (1, 5), (2, 1)]]
    outputs = {
        "pred_logits": torch.stack([c[0] for c in cases]),
        "pred_masks": torch.stack([c[1] for c in cases]),
    }
    HungarianMatcher()(outputs, [{"labels": c[2], "masks": c[3]} for c in cases])
    assert calls == [{k: (6, t) for k in ("class", "mask", "dice")} for t in (3, 5, 1)]


def _loops(obj):
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    kinds = (ast.For, ast.While, ast.ListComp, ast.GeneratorExp, ast.SetComp, ast.DictComp)
    return [node for node in ast.walk(tree) if isinstance(node, kinds)]


def test_no_python_loop_over_queries_or_targets():
    # The cost computations have no loop at all; forward has exactly one, over images.
    for fn in [
        HungarianMatcher.cost_terms,
        HungarianMatcher._mask_pairs,
        matcher_module.targets_at_resolution,
        losses_module,
    ]:
        assert _loops(fn) == [], fn
    cost_matrix_loops = _loops(HungarianMatcher.cost_matrix)
    # only over the (at most 3) named cost terms
    assert all("terms" in ast.unparse(node) for node in cost_matrix_loops)
    forward_loops = [n for n in _loops(HungarianMatcher.forward) if isinstance(n, ast.For)]
    assert len(forward_loops) == 1 and "targets" in ast.unparse(forward_loops[0].iter)


def test_point_sampled_matching_equals_brute_force():
    matcher = HungarianMatcher(num_points=64)
    for seed in range(30):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        q, t = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        logits, masks, labels, tgt = random_case(seed, q, t, target_scale=2)
        torch.manual_seed(1000 + seed)
        rows, cols = match_one(matcher, logits, masks, labels, tgt)
        torch.manual_seed(1000 + seed)  # the same points
        cost = matcher.cost_matrix(logits, masks, labels, tgt).double().numpy()
        assert cost[rows.numpy(), cols.numpy()].sum() == pytest.approx(brute_force_min(cost), abs=1e-9)


def test_one_pixel_target_still_has_a_mask_cost():
    matcher = HungarianMatcher(0.0, 20.0, 1.0)
    """Area downsampling keeps a segment smaller than a prediction cell (nearest may drop it)."""
    masks = torch.full((2, 4, 4), -5.0)
    masks[0, 1, 1] = 5.0  # query 0 predicts the cell holding the pixel
    masks[1, 2, 2] = 5.0  # query 1 predicts another cell
    tgt = torch.zeros(1, 16, 16, dtype=torch.bool)
    tgt[0, 5, 5] = True  # one pixel, inside cell (1, 1)
    small = matcher_module.targets_at_resolution(tgt, (4, 4))
    assert small[0, 1, 1] == pytest.approx(1 / 16) and small.sum() == pytest.approx(1 / 16)
    cost = matcher.cost_matrix(torch.zeros(2, 3), masks, torch.tensor([0]), tgt)
    assert cost[0, 0] < cost[1, 0]



def test_point_samples_equal_per_mask_sampling():
    """The masks are sampled as channels of one map: exactly the per-mask samples at the
    same points (the official samples each mask at expanded coordinates)."""
    matcher = HungarianMatcher(num_points=300)
    _, masks, _, tgt = random_case(0, 7, 4, target_scale=3)
    torch.manual_seed(0)
    pred, tgt_points = matcher._mask_pairs(masks, tgt)
    torch.manual_seed(0)
    coords = torch.rand(1, 300, 2)
    want_pred = F.grid_sample(masks[:, None], (2 * coords - 1).expand(7, -1, -1)[:, :, None], align_corners=False)
    want_tgt = F.grid_sample(tgt[:, None].float(), (2 * coords - 1).expand(4, -1, -1)[:, :, None], align_corners=False)
    assert torch.equal(pred, want_pred[:, 0, :, 0]) and torch.equal(tgt_points, want_tgt[:, 0, :, 0])
