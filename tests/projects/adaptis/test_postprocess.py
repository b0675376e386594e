"""Panoptic, instance and click outputs of accepted masks, by hand."""
import torch

from d2ext_projects.adaptis.postprocess import click_instances, mask_classes, panoptic_outputs

# classes: 0, 1 things; 2, 3 stuff. A 4 x 6 image.


def _semantic():
    sem = torch.zeros(4, 4, 6)
    sem[2] = 1.0  # stuff 2 everywhere ...
    sem[:, :, 4:] = 0
    sem[3, :, 4:] = 1.0  # ... but stuff 3 in the two right columns
    sem[:, 0, 0] = 0
    sem[1, 0, 0] = 1.0  # a thing-class pixel no mask claims: void
    return sem


def test_panoptic_by_hand():
    sem = _semantic()
    sem[:, 1:3, 1:3] = torch.tensor([0.7, 0.1, 0.2, 0.0])[:, None, None]  # thing 0 under mask a
    probs = torch.zeros(2, 4, 6)
    probs[0, 1:3, 1:3] = 0.9  # mask a
    probs[1, 3, 3] = 0.95  # mask b: one pixel, where things have probability 0
    (pan, info), inst = panoptic_outputs(probs, sem, [0, 1], (4, 6), mask_thresh=0.5)
    # mask a wins its 4 pixels (0.9 > 1 - 0.8); mask b wins its pixel (0.95 > 1 - 0 is false!)
    # -> b is not visible, and is dropped
    assert [s["isthing"] for s in info] == [True, False, False]
    a, s2, s3 = info
    assert a["category_id"] == 0 and a["area"] == 4
    assert (s2["category_id"], s3["category_id"]) == (2, 3)
    assert pan[1:3, 1:3].eq(a["id"]).all()
    assert pan[0, 0] == 0  # void: semantic says thing 1, no mask
    assert pan[:, 4:].eq(s3["id"]).all()
    assert int((pan == s2["id"]).sum()) == 24 - 4 - 8 - 1
    assert inst.pred_masks.shape == (1, 4, 6) and inst.pred_masks[0].sum() == 4
    assert inst.pred_classes.tolist() == [0]
    # score: mean mask probability inside the mask x mean class probability there
    assert abs(float(inst.scores[0]) - 0.9 * 0.7) < 1e-6
    assert inst.pred_boxes.tensor.tolist() == [[1.0, 1.0, 3.0, 3.0]]


def test_panoptic_without_masks_is_valid():
    sem = _semantic()
    (pan, info), inst = panoptic_outputs(torch.zeros(0, 4, 6), sem, [0, 1], (8, 12), mask_thresh=0.5)
    assert pan.shape == (8, 12) and pan.dtype == torch.int32
    assert [s["isthing"] for s in info] == [False, False]
    assert set(pan.unique().tolist()) == {0, 1, 2}
    assert len(inst) == 0 and inst.image_size == (8, 12) and inst.pred_masks.shape == (0, 8, 12)


def test_mask_classes_and_clicks():
    thing = torch.zeros(2, 4, 6)
    thing[1, :, :3] = 0.8
    thing[0, :, 3:] = 0.6
    probs = torch.zeros(3, 4, 6)
    probs[0, :, :2] = 0.9
    probs[1, :, 4:] = 0.7
    probs[2, :, 3] = 0.3  # below the threshold everywhere: weighted by its probabilities
    cls, cls_prob, masks = mask_classes(probs, thing, 0.5)
    assert cls.tolist() == [1, 0, 0] and masks[2].sum() == 0
    torch.testing.assert_close(cls_prob[:2], torch.tensor([0.8, 0.6]))
    sem = torch.cat([thing, torch.zeros(1, 4, 6)])
    inst = click_instances(probs, sem, [0, 1], (8, 12), mask_thresh=0.5)
    assert inst.pred_masks.shape == (3, 8, 12) and inst.mask_probs.shape == (3, 8, 12)
    assert inst.pred_classes.tolist() == [1, 0, 0]
    same = click_instances(probs, sem, [0, 1], (4, 6), mask_thresh=0.5)
    assert same.scores[2] == 0 and abs(float(same.scores[0]) - 0.9) < 1e-6
    assert same.pred_boxes.tensor[0].tolist() == [0.0, 0.0, 2.0, 4.0]
