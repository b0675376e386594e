"""The AdaptIS model: training stages, frozen parts, the threshold buffer, empty
cases and click-to-segment (input dict, predict_from_points, Predictor)."""
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.structures import Instances

from d2ext.engine import Predictor, Trainer
from d2ext.engine.solver import build_optimizer
from d2ext_projects.adaptis import MissingStage1WeightsError
from tests.projects.adaptis.conftest import TOY_STAGE1, TOY_STAGE2, build, tiny_cfg


def _batch(n=2, size=(64, 80), things=True):
    torch.manual_seed(1)
    out = []
    for i in range(n):
        h, w = size
        masks = torch.zeros(3, h, w, dtype=torch.bool)
        masks[0, 5:20, 5:30] = True  # thing 0
        masks[1, 30:50, 40:70] = True  # thing 2
        masks[2] = ~(masks[0] | masks[1])  # stuff 3
        classes = torch.tensor([0, 2, 3])
        if not things:
            masks, classes = masks[2:], classes[2:]
        sem = torch.full((h, w), 3, dtype=torch.int64)
        if things:
            sem[masks[0]] = 0
            sem[masks[1]] = 2
        out.append({
            "image": torch.rand(3, h, w) * 255,
            "segments": Instances((h, w), gt_classes=classes, gt_masks=masks),
            "sem_seg": sem,
        })
    return out


def _step(model, batch, optimizer):
    losses = model(batch)
    total = sum(losses.values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return losses


def test_stage1_trains_masks_and_semantics_not_proposals():
    model = build().train()
    losses = model(_batch())
    assert set(losses) == {"loss_mask", "loss_sem_seg"}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.proposal_head.parameters())
    assert all(p.grad is not None for p in model.instance_head.parameters())
    assert float(model.iou_thresh) == pytest.approx(0.35)  # stage 1 leaves it alone


def test_images_without_things_train():
    model = build().train()
    for batch in (_batch(things=False), _batch(1) + _batch(1, things=False)):
        losses = model(batch)
        assert all(torch.isfinite(v) for v in losses.values())
        model.zero_grad()
        sum(losses.values()).backward()
        grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # without things the mask loss is exactly 0 and the semantic head still learns
    losses = model(_batch(things=False))
    assert losses["loss_mask"].item() == 0.0 and losses["loss_sem_seg"].item() > 0


# Untrained masks with p around 0.35 (the toy yaml's output bias puts them at 0.15,
# below any threshold: no IoU, no stage-2 label, nothing would change).
UNBIASED = ["MODEL.ADAPTIS.INSTANCE_HEAD.OUTPUT_SCALE", "5.0", "MODEL.ADAPTIS.INSTANCE_HEAD.OUTPUT_BIAS", "-0.62"]


def test_stage2_freezes_everything_but_proposals_and_keeps_them_in_eval(tmp_path):
    model = build(TOY_STAGE2, ["MODEL.WEIGHTS", ""] + UNBIASED)
    model.train()
    assert model.proposal_head.training
    assert not any(m.training for n, m in model.named_children() if n != "proposal_head")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(tiny_cfg(TOY_STAGE2), model)
    trainable = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trainable == {id(p) for p in model.proposal_head.parameters()}
    for _ in range(2):
        losses = _step(model, _batch(), optimizer)
    assert set(losses) == {"loss_proposals"}
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # the proposal head and the threshold change; every other parameter and every
    # frozen BatchNorm buffer (running mean / var, batches tracked) is unchanged
    assert "iou_thresh" in changed
    assert any(k.startswith("proposal_head.") for k in changed)
    frozen_bn = [k for k in before if "running_" in k and not k.startswith("proposal_head.")]
    assert frozen_bn and not (changed & set(frozen_bn))
    assert changed <= {k for k in before if k.startswith("proposal_head.")} | {"iou_thresh"}


def test_stage2_refuses_to_start_without_weights(tmp_path, tiny_toy):
    for weights in ("", str(tmp_path / "missing.pth")):
        cfg = tiny_cfg(TOY_STAGE2, ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path)])
        with pytest.raises(MissingStage1WeightsError, match="MODEL.WEIGHTS"):
            Trainer(cfg)


def test_threshold_survives_checkpoint(tmp_path):
    model = build(TOY_STAGE2, ["MODEL.WEIGHTS", ""])
    model.iou_thresh.fill_(0.4321)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("ckpt")
    fresh = build(TOY_STAGE2, ["MODEL.WEIGHTS", ""])
    assert float(fresh.iou_thresh) == pytest.approx(0.35)
    DetectionCheckpointer(fresh).load(str(tmp_path / "ckpt.pth"))
    assert float(fresh.iou_thresh) == pytest.approx(0.4321)


def test_no_accepted_candidate_infers():
    # MASK_THRESH 1: no mask has a pixel above it, every candidate is rejected
    model = build(opts=["MODEL.ADAPTIS.TEST.MASK_THRESH", "1.0", "MODEL.ADAPTIS.TEST.PROPOSAL_THRESH", "0.0",
                        "MODEL.ADAPTIS.TEST.THING_PROB_THRESH", "0.0"]).eval()
    image = torch.rand(3, 64, 80) * 255
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 96, "width": 120}])
    pan, info = out["panoptic_seg"]
    assert pan.shape == (96, 120) and pan.dtype == torch.int32
    assert all(not s["isthing"] for s in info)
    assert set(pan.unique().tolist()) <= {0} | {s["id"] for s in info}
    assert len(out["instances"]) == 0 and out["instances"].image_size == (96, 120)
    assert out["sem_seg"].shape == (5, 96, 120)
    # and the candidates existed: it is the assembly that rejected them
    ctx = model.image_contexts([{"image": image}], model.preprocess([{"image": image}]))[0]
    cands = ctx.candidates(power=2.0, thing_thresh=0.0, blur=2, thresh=0.0, kernel=3, limit=100)
    assert cands.shape[0] > 0


def test_model_assembly_batched_equals_one_at_a_time():
    """With the real head: a chunk's masks equal one-point forwards (what makes the
    batched assembly exact), and the assembly decides the same with fewer forwards.
    (An untrained head barely depends on the point, so few masks are accepted here;
    test_assembly.py checks the decisions on scenes with many.)"""
    model = build(opts=["MODEL.ADAPTIS.TEST.MIN_AREA", "1"]).eval()
    image = torch.rand(3, 64, 80) * 255
    inputs = [{"image": image}]
    with torch.no_grad():
        ctx = model.image_contexts(inputs, model.preprocess(inputs))[0]
        grid = torch.stack(torch.meshgrid(torch.arange(4, 80, 9.0), torch.arange(4, 64, 9.0), indexing="xy"), -1)
        cands = grid.reshape(-1, 2) + 0.5
        chunk = ctx.predict(cands[:16])
        single = torch.cat([ctx.predict(cands[i : i + 1]) for i in range(16)])
        torch.testing.assert_close(chunk, single, rtol=1e-4, atol=1e-5)
        model.test_cfg["mask_thresh"] = float(chunk.flatten().quantile(0.9))
        model.test_cfg["overlap_thresh"] = 0.3
        one = model.assemble(ctx, cands, chunk_size=1)
        batched = model.assemble(ctx, cands, chunk_size=16)
    assert len(one.accepted) >= 1 and one.num_forwards > 4
    assert one.accepted == batched.accepted
    torch.testing.assert_close(one.probs, batched.probs, rtol=1e-4, atol=1e-5)
    assert batched.num_forwards < one.num_forwards


def test_click_to_segment_input_dict_and_predict_from_points():
    model = build().eval()
    image = torch.rand(3, 64, 80) * 255
    points = torch.tensor([[10.0, 12.0], [60.0, 40.0], [30.0, 30.0]])
    with torch.no_grad():
        (out,) = model([{"image": image, "points": points, "height": 128, "width": 160}])
    assert set(out) == {"instances"}
    inst = out["instances"]
    assert len(inst) == 3 and inst.image_size == (128, 160)
    assert inst.pred_masks.shape == (3, 128, 160) and inst.mask_probs.shape == (3, 128, 160)
    assert inst.scores.shape == (3,) and set(inst.pred_classes.tolist()) <= {0, 1, 2}
    same = model.predict_from_points(image, points, 128, 160)
    torch.testing.assert_close(same.mask_probs, inst.mask_probs)
    # one mask per point, each from its own point: the masks differ
    assert not torch.allclose(inst.mask_probs[0], inst.mask_probs[1])
    # a point's mask does not depend on the other points of the request
    alone = model.predict_from_points(image, points[1:2], 128, 160)
    torch.testing.assert_close(alone.mask_probs[0], inst.mask_probs[1], rtol=1e-4, atol=1e-5)
    empty = model.predict_from_points(image, torch.zeros(0, 2))
    assert len(empty) == 0 and empty.image_size == (64, 80)


def test_click_through_predictor_transforms_points(tmp_path):
    cfg = tiny_cfg(TOY_STAGE1, ["MODEL.WEIGHTS", ""])
    predictor = Predictor(cfg)
    rng = np.random.default_rng(0)
    original = rng.integers(0, 255, (128, 160, 3), dtype=np.uint8)  # BGR, resized to 64 x 80
    points = np.array([[20.0, 24.0], [120.0, 80.0]])
    out = predictor(original, points=points)
    inst = out["instances"]
    assert len(inst) == 2 and inst.image_size == (128, 160)
    # the same as the model on the image resized as the predictor does, points scaled by 1/2
    from detectron2.data import transforms as T

    aug = T.AugInput(np.ascontiguousarray(original[:, :, ::-1]))
    predictor.augmentations(aug)
    assert aug.image.shape[:2] == (64, 80)
    image = torch.as_tensor(aug.image.astype("float32").transpose(2, 0, 1).copy())
    direct = predictor.model.predict_from_points(image, torch.tensor(points / 2, dtype=torch.float32), 128, 160)
    torch.testing.assert_close(inst.mask_probs, direct.mask_probs, rtol=1e-5, atol=1e-6)
    # and not what the unscaled points give
    wrong = predictor.model.predict_from_points(image, torch.tensor(points, dtype=torch.float32), 128, 160)
    assert not torch.allclose(wrong.mask_probs, direct.mask_probs, atol=1e-4)


def test_random_candidates_are_seeded_and_on_things():
    model = build(opts=["MODEL.ADAPTIS.TEST.CANDIDATES", "random"]).eval()
    image = torch.rand(3, 64, 80) * 255
    inputs = [{"image": image}]
    with torch.no_grad():
        ctx = model.image_contexts(inputs, model.preprocess(inputs))[0]
        thing = ctx.sem_prob_image[model.thing_ids].max(dim=0).values
        thresh = float(thing.median())
        kw = dict(power=2.0, thing_thresh=thresh, blur=2, thresh=0.1, kernel=3, limit=30, mode="random")
        a, b, c = ctx.candidates(seed=0, **kw), ctx.candidates(seed=0, **kw), ctx.candidates(seed=1, **kw)
    assert a.shape == (30, 2) and torch.equal(a, b) and not torch.equal(a, c)
    px = (a - 0.5).long()
    assert (thing[px[:, 1], px[:, 0]] >= thresh).all()
    with torch.no_grad():
        (out,) = model(inputs)  # inference with random candidates end to end
    assert "panoptic_seg" in out
