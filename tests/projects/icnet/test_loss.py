"""Cascade label guidance against hand-computed values and a second implementation."""
import math

import pytest
import torch
import torch.nn.functional as F

from d2ext_projects.icnet import cascade_guidance_losses, downsample_labels

from .conftest import build_model

IGNORE = 255
# Two classes, the same logits everywhere: p(class 1) = 3 / 4, so a pixel labelled
# 1 costs ln(4/3) and a pixel labelled 0 costs ln(4).
LOGIT_1 = math.log(3.0)
CE_1, CE_0 = math.log(4.0 / 3.0), math.log(4.0)


def constant_logits(n, h, w):
    logits = torch.zeros(n, 2, h, w)
    logits[:, 1] = LOGIT_1
    return logits


def test_downsample_labels_takes_the_centre_of_each_cell():
    labels = torch.arange(16).view(1, 4, 4)
    # 2x2 cells: centre pixel (1, 1), (1, 3), (3, 1), (3, 3).
    assert downsample_labels(labels, (2, 2)).tolist() == [[[5, 7], [13, 15]]]
    # 4x4 cells over 8x8: pixel (4i + 2, 4j + 2).
    labels = torch.arange(64).view(1, 8, 8)
    assert downsample_labels(labels, (2, 2)).tolist() == [[[18, 22], [50, 54]]]
    # Same size: unchanged; non-integer ratio 6 -> 4: rows floor((i + 0.5) * 1.5) = 0, 2, 3, 5.
    assert torch.equal(downsample_labels(labels, (8, 8)), labels)
    labels = torch.arange(36).view(1, 6, 6)
    assert downsample_labels(labels, (4, 4))[0, :, 0].tolist() == [0, 12, 18, 30]


def test_downsample_labels_matches_nearest_exact_interpolation():
    labels = torch.randint(0, 6, (2, 32, 48))
    labels[:, :5] = IGNORE
    for size in [(16, 24), (8, 12), (4, 6), (5, 7)]:
        ref = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()
        assert torch.equal(downsample_labels(labels, size), ref)


def test_cascade_losses_by_hand():
    # 8x8 labels; levels 2x2 (1/4 here), 4x4, 8x8. Pixels read by the 2x2 level:
    # (2, 2), (2, 6), (6, 2), (6, 6); by the 4x4 level: (2i + 1, 2j + 1).
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 1, 1::2] = 1  # (1, 1), (1, 3), (1, 5), (1, 7)
    labels[0, 3, 1::2] = 1
    labels[0, 2, 2] = 1
    labels[0, 6, 6] = IGNORE
    logits = [constant_logits(1, 2, 2), constant_logits(1, 4, 4), constant_logits(1, 8, 8)]
    weights = (0.4, 0.4, 1.0)
    losses = cascade_guidance_losses(logits, labels, weights, ("a", "b", "c"), IGNORE)
    # 2x2: labels 1, 0, 0, ignore.
    assert losses["a"].item() == pytest.approx(0.4 * (CE_1 + 2 * CE_0) / 3, rel=1e-6)
    # 4x4: rows 1 and 3 are 1 (8 pixels), rows 5 and 7 are 0 (8 pixels).
    assert losses["b"].item() == pytest.approx(0.4 * (8 * CE_1 + 8 * CE_0) / 16, rel=1e-6)
    # 8x8: 63 labelled pixels, of which the 1s: (2, 2) and rows 1, 3 at odd columns.
    ones = 1 + 8
    assert losses["c"].item() == pytest.approx((ones * CE_1 + (63 - ones) * CE_0) / 63, rel=1e-6)


def test_cascade_losses_need_one_weight_per_level():
    with pytest.raises(ValueError, match="one weight"):
        cascade_guidance_losses([constant_logits(1, 2, 2)], torch.zeros(1, 2, 2, dtype=torch.long),
                                (0.4, 1.0), ("a",), IGNORE)


def test_head_losses_match_a_reference_on_the_captured_logits():
    """The head's three losses are CE at 1/16, 1/8, 1/4 with weights (0.16, 0.4, 1.0)
    against labels sampled by nearest-exact interpolation, ignore label excluded."""
    _, model = build_model("image", ["MODEL.ICNET.LOSS_WEIGHTS", "[0.16, 0.4, 1.0]"], train=True)
    head = model.sem_seg_head
    captured = {}
    for name, module in [("16", head.cff_medium.aux_classifier),
                         ("8", head.cff_high.aux_classifier), ("final", head.classifier)]:
        module.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
    torch.manual_seed(1)
    labels = torch.randint(0, 5, (2, 64, 96))
    labels[0, :, :40] = IGNORE
    batch = [{"image": torch.rand(3, 64, 96) * 255, "sem_seg": labels[i]} for i in range(2)]
    losses = model(batch)

    def reference(logits, weight):
        target = F.interpolate(labels[:, None].float(), size=logits.shape[-2:], mode="nearest-exact")
        return weight * F.cross_entropy(logits, target[:, 0].long(), ignore_index=IGNORE)

    assert captured["16"].shape[-2:] == (4, 6) and captured["8"].shape[-2:] == (8, 12)
    final = F.interpolate(captured["final"], size=(16, 24), mode="bilinear", align_corners=False)
    expected = {
        "loss_guidance_1_16": reference(captured["16"], 0.16),
        "loss_guidance_1_8": reference(captured["8"], 0.4),
        "loss_sem_seg": reference(final, 1.0),
    }
    assert losses.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key], rtol=1e-5, atol=1e-6)
