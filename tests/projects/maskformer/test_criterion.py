"""SetCriterion: loss values worked out by hand, images without segments, deep
supervision with its own matching per layer, normalization by the number of masks."""
import pytest
import torch
import torch.nn.functional as F

import d2ext_projects.maskformer.criterion as criterion_module
from d2ext_projects.maskformer.criterion import SetCriterion, num_masks_across_processes
from d2ext_projects.maskformer.losses import dice_loss, sigmoid_focal_loss
from d2ext_projects.maskformer.matcher import HungarianMatcher

K = 3  # classes; index 3 = no object


def make_criterion(**kwargs):
    return SetCriterion(K, HungarianMatcher(1.0, 20.0, 1.0), **kwargs)


def outputs_from(logits, masks, aux=()):
    out = {"pred_logits": logits, "pred_masks": masks}
    if aux:
        out["aux_outputs"] = [{"pred_logits": a, "pred_masks": m} for a, m in aux]
    return out


def rand_outputs(seed, b=2, q=5, size=(4, 4), requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, q, K + 1, generator=g).requires_grad_(requires_grad)
    masks = torch.randn(b, q, *size, generator=g).requires_grad_(requires_grad)
    return logits, masks


def square_target(labels, boxes, size=(16, 16)):
    masks = torch.zeros(len(labels), *size, dtype=torch.bool)
    for i, (y0, x0, y1, x1) in enumerate(boxes):
        masks[i, y0:y1, x0:x1] = True
    return {"labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


def empty_target(size=(16, 16)):
    return {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, *size, dtype=torch.bool)}


def test_keys_weights_and_deep_supervision_keys():
    logits, masks = rand_outputs(0)
    aux = [rand_outputs(s) for s in (1, 2)]
    targets = [square_target([0, 2], [(0, 0, 8, 8), (8, 8, 16, 16)]), square_target([1], [(4, 4, 12, 12)])]
    losses = make_criterion()(outputs_from(logits, masks, aux), targets)
    assert set(losses) == {f"loss_{n}{s}" for n in ("ce", "mask", "dice") for s in ("", "_0", "_1")}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    unweighted = SetCriterion(K, HungarianMatcher(1.0, 20.0, 1.0), mask_weight=1.0)(
        outputs_from(logits, masks), targets
    )
    assert losses["loss_mask"].item() == pytest.approx(20 * unweighted["loss_mask"].item(), rel=1e-5)


def test_values_equal_hand_computation():
    """With the matching known, each loss is the documented formula."""
    logits, masks = rand_outputs(3, b=1, q=4)
    target = square_target([1, 2], [(0, 0, 8, 16), (8, 0, 16, 16)])
    crit = make_criterion(mask_weight=1.0)
    (rows, cols), = crit.matcher(outputs_from(logits, masks), [dict(target, masks=target["masks"])])
    losses = crit(outputs_from(logits, masks), [target])

    classes = torch.full((1, 4), K)
    classes[0, rows] = target["labels"][cols]
    weight = torch.tensor([1.0, 1.0, 1.0, 0.1])
    per_query = F.cross_entropy(logits[0], classes[0], reduction="none")
    expected_ce = (per_query * weight[classes[0]]).sum() / weight[classes[0]].sum()
    assert losses["loss_ce"].item() == pytest.approx(expected_ce.item(), rel=1e-5)

    up = F.interpolate(masks[:, rows], size=(16, 16), mode="bilinear", align_corners=False)[0].flatten(1)
    tgt = target["masks"][cols].flatten(1).float()
    assert losses["loss_mask"].item() == pytest.approx(sigmoid_focal_loss(up, tgt).sum().item() / 2, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice_loss(up, tgt).sum().item() / 2, rel=1e-5)


def test_image_without_segments_trains_all_queries_no_object():
    logits, masks = rand_outputs(4, b=2, q=5, requires_grad=True)
    targets = [empty_target(), square_target([0], [(0, 0, 8, 8)])]
    losses = make_criterion()(outputs_from(logits, masks), targets)
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(masks.grad).all()
    # no mask gradient for the image without segments: its queries have no mask target
    assert masks.grad[0].abs().sum() == 0
    # its class target is "no object" for every query: the gradient pushes that logit up
    assert (logits.grad[0, :, K] < 0).all()


def test_batch_without_any_segment():
    logits, masks = rand_outputs(5, b=2, q=3, requires_grad=True)
    aux = [tuple(t.detach().clone().requires_grad_(True) for t in rand_outputs(6, b=2, q=3))]
    losses = make_criterion()(outputs_from(logits, masks, aux), [empty_target(), empty_target()])
    for suffix in ("", "_0"):
        assert losses["loss_mask" + suffix].item() == 0 and losses["loss_dice" + suffix].item() == 0
    expected = F.cross_entropy(logits.detach().reshape(-1, K + 1), torch.full((6,), K))
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    sum(losses.values()).backward()
    # every prediction still gets a (zero) gradient: DDP sees no unused parameter
    assert masks.grad is not None and masks.grad.abs().sum() == 0


def test_each_decoder_layer_has_its_own_matching():
    """An earlier layer predicting the same pairs in another query order gets the same losses."""
    logits, masks = rand_outputs(7, b=2, q=6)
    perm = torch.randperm(6)
    targets = [square_target([0, 1], [(0, 0, 8, 8), (4, 4, 16, 16)]), square_target([2], [(2, 2, 10, 10)])]
    losses = make_criterion()(outputs_from(logits, masks, [(logits[:, perm], masks[:, perm])]), targets)
    for name in ("ce", "mask", "dice"):
        assert losses[f"loss_{name}_0"].item() == pytest.approx(losses[f"loss_{name}"].item(), rel=1e-5)


def test_normalized_by_number_of_target_masks():
    """Twice the batch (twice the masks) gives the same mask losses."""
    logits, masks = rand_outputs(8, b=1, q=5)
    target = square_target([0, 1, 2], [(0, 0, 8, 8), (8, 8, 16, 16), (0, 8, 8, 16)])
    one = make_criterion()(outputs_from(logits, masks), [target])
    two = make_criterion()(outputs_from(logits.repeat(2, 1, 1), masks.repeat(2, 1, 1, 1)), [target, target])
    for name in ("loss_ce", "loss_mask", "loss_dice"):
        assert two[name].item() == pytest.approx(one[name].item(), rel=1e-5)


def test_num_masks_averaged_across_processes(monkeypatch):
    monkeypatch.setattr(criterion_module.comm, "get_world_size", lambda: 2)

    def all_reduce(tensor):  # the other process has 7 masks
        tensor += 7

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    targets = [square_target([0, 1, 2], [(0, 0, 1, 1)] * 3)]
    assert num_masks_across_processes(targets, "cpu") == pytest.approx(5.0)
    assert num_masks_across_processes([empty_target()], "cpu") == pytest.approx(3.5)


def test_num_masks_at_least_one():
    assert num_masks_across_processes([empty_target()], "cpu") == 1.0


def test_perfect_predictions_give_small_mask_losses():
    target = square_target([0, 1], [(0, 0, 8, 16), (8, 0, 16, 16)], size=(8, 8))
    masks = torch.full((1, 3, 8, 8), -20.0)
    masks[0, 0][target["masks"][0]] = 20.0
    masks[0, 2][target["masks"][1]] = 20.0
    logits = torch.full((1, 3, K + 1), -10.0)
    logits[0, 0, 0] = logits[0, 2, 1] = logits[0, 1, K] = 10.0
    losses = make_criterion()(outputs_from(logits, masks), [target])
    assert all(v.item() < 1e-3 for v in losses.values()), losses


@pytest.mark.parametrize("mode", ["prediction_resolution", "points"])
def test_other_mask_loss_modes_train(mode):
    kwargs = {"at_target_resolution": False} if mode == "prediction_resolution" else {"num_points": 32}
    crit = SetCriterion(K, HungarianMatcher(num_points=kwargs.get("num_points", 0)), **kwargs)
    logits, masks = rand_outputs(9, b=2, q=4, requires_grad=True)
    targets = [square_target([0], [(0, 0, 8, 8)]), empty_target()]
    losses = crit(outputs_from(logits, masks), targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values()) and torch.isfinite(masks.grad).all()
    assert masks.grad[0].abs().sum() > 0


def test_loss_at_prediction_resolution_uses_area_downsampled_targets():
    logits, masks = rand_outputs(10, b=1, q=2, size=(4, 4))
    target = square_target([0], [(0, 0, 6, 6)])  # covers cell (1, 1) by a quarter
    crit = make_criterion(mask_weight=1.0, at_target_resolution=False)
    losses = crit(outputs_from(logits, masks), [target])
    (rows, cols), = crit.matcher(outputs_from(logits, masks), [target])
    small = F.avg_pool2d(target["masks"].float()[None], 4)[0]
    expected = dice_loss(masks[0, rows].flatten(1), small[cols].flatten(1)).sum()
    assert losses["loss_dice"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_point_sampled_losses_equal_shared_point_selection():
    """The criterion's own point selection (an unsorted top-k) draws the same random numbers
    and keeps the same points as d2ext.layers.uncertain_points_with_randomness (the official
    get_uncertain_point_coords_with_randomness): the same losses and gradients."""
    from d2ext.layers import binary_uncertainty, point_sample, uncertain_points_with_randomness

    def shared_point_pairs(self, src, tgt):
        with torch.no_grad():
            coords = uncertain_points_with_randomness(
                src[:, None], binary_uncertainty, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio,
            )
            tgt = point_sample(tgt[:, None].to(src.dtype), coords, align_corners=False)[:, 0]
        return point_sample(src[:, None], coords, align_corners=False)[:, 0], tgt

    targets = [
        square_target([0, 2], [(0, 0, 8, 8), (4, 6, 16, 16)]),
        empty_target(),
        square_target([1], [(2, 2, 5, 12)]),
    ]
    results = []
    for point_pairs in (SetCriterion._point_pairs, shared_point_pairs):
        logits, masks = rand_outputs(11, b=3, q=4, size=(8, 8), requires_grad=True)
        aux_logits, aux_masks = (t.detach().clone().requires_grad_(True) for t in rand_outputs(12, b=3, q=4, size=(8, 8)))
        criterion = SetCriterion(K, HungarianMatcher(2.0, 5.0, 5.0, num_points=40), class_weight=2.0,
                                 mask_weight=5.0, dice_weight=5.0, num_points=40)
        criterion._point_pairs = point_pairs.__get__(criterion)
        torch.manual_seed(0)
        losses = criterion(outputs_from(logits, masks, [(aux_logits, aux_masks)]), targets)
        sum(losses.values()).backward()
        results.append((losses, masks.grad, aux_masks.grad))
    (got, *got_grads), (want, *want_grads) = results
    assert got.keys() == want.keys() and "loss_mask_0" in got
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7)
    for g, w in zip(got_grads, want_grads):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


def test_mask2former_bce_mask_loss_and_cost_equal_torchs_binary_cross_entropy():
    """mask_loss="bce" (Mask2Former's): the matched masks' loss_mask is the mean BCE per
    mask, and the matching cost is the pairwise mean BCE; an unknown name is named."""
    logits, masks = rand_outputs(5, b=1, q=4)
    target = square_target([1, 2], [(0, 0, 8, 16), (8, 0, 16, 16)])
    matcher = HungarianMatcher(1.0, 1.0, 1.0, mask_loss="bce")
    crit = SetCriterion(K, matcher, mask_weight=1.0, mask_loss="bce")
    (rows, cols), = matcher(outputs_from(logits, masks), [target])
    losses = crit(outputs_from(logits, masks), [target])
    up = F.interpolate(masks[:, rows], size=(16, 16), mode="bilinear", align_corners=False)[0].flatten(1)
    tgt = target["masks"][cols].flatten(1).float()
    expected = F.binary_cross_entropy_with_logits(up, tgt, reduction="none").mean(1).sum() / 2
    assert losses["loss_mask"].item() == pytest.approx(expected.item(), rel=1e-5)
    focal = make_criterion(mask_weight=1.0)(outputs_from(logits, masks), [target])["loss_mask"]
    assert abs(focal.item() - expected.item()) > 1e-3  # the two losses differ

    pred = torch.randn(3, 20, generator=torch.Generator().manual_seed(1))
    tgt = (torch.rand(2, 20, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    cost = matcher.cost_terms(torch.zeros(3, K + 1), pred.view(3, 4, 5), torch.tensor([0, 1]), tgt.view(2, 4, 5))
    bce = torch.stack([F.binary_cross_entropy_with_logits(pred, t.expand(3, -1), reduction="none").mean(1) for t in tgt], 1)
    torch.testing.assert_close(cost["mask"], bce)
    with pytest.raises(ValueError, match="mask loss 'l1'"):
        SetCriterion(K, matcher, mask_loss="l1")
