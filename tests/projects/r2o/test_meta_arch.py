"""The R2O meta-architecture: frozen EMA copies outside the optimizer, the loss
on identical views is 0, the K of an iteration is k_schedule's, clusters are
reproducible per iteration, no gradient reaches the target, predict_masks,
and 2 training iterations through d2ext's Trainer in both modes."""
import os

import pytest
import torch
from detectron2.engine import hooks as d2_hooks
from detectron2.utils.events import EventStorage
from torch import nn

import d2ext_projects  # noqa: F401  (registers R2O)
import d2ext_projects.r2o.meta_arch as meta_arch_module
from d2ext.data.datasets import toy
from d2ext.engine import Trainer, load_cfg
from d2ext.engine.solver import build_optimizer
from d2ext_projects.r2o import R2O, R2OTargetUpdate
from d2ext_projects.r2o.schedules import k_schedule

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
R2O_TOY = os.path.join(REPO_ROOT, "configs", "r2o", "toy", "r2o_R18_toy.yaml")
BYOL_TOY = os.path.join(REPO_ROOT, "configs", "r2o", "toy", "byol_R18_toy.yaml")
G, S = 64, 32  # whole image, views

TINY = [
    "MODEL.R2O.VIEWS.WHOLE_SIZE", str(G),
    "MODEL.R2O.VIEWS.CROP_SIZE", str(S),
    "MODEL.R2O.VIEWS.SLIC_SEGMENTS", "24",
    "MODEL.R2O.PROJECTOR_HIDDEN", "32",
    "MODEL.R2O.PROJECTOR_DIM", "16",
    "MODEL.R2O.PREDICTOR_HIDDEN", "32",
    "MODEL.R2O.KMEANS.K_START", "16",
    "MODEL.R2O.KMEANS.K_END", "2",
    "MODEL.R2O.KMEANS.K_UPDATE_PERIOD", "1",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "10",
    "SOLVER.WARMUP_ITERS", "1",
    "DATALOADER.NUM_WORKERS", "0",
    "D2EXT.TOY_UNLABELED_NUM_IMAGES", "4",
]


def tiny_cfg(config=R2O_TOY, opts=()):
    return load_cfg(config, TINY + list(opts))


def build(config=R2O_TOY, opts=()) -> R2O:
    torch.manual_seed(0)
    return Trainer.build_model(tiny_cfg(config, opts))


def blocks(g: int, cell: int) -> torch.Tensor:
    """(g, g) int64 superpixels: square blocks of side ``cell``, labelled row-major."""
    n = g // cell
    return torch.arange(n * n).view(n, n).repeat_interleave(cell, 0).repeat_interleave(cell, 1)


def make_batch(num_images=2, identical=False, seed=0):
    """Input dicts following the r2o_views contract, with random pixels."""
    gen = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(num_images):
        whole = torch.randint(0, 256, (3, G, G), dtype=torch.uint8, generator=gen)
        view1 = torch.randint(0, 256, (3, S, S), dtype=torch.uint8, generator=gen)
        view2 = view1.clone() if identical else torch.randint(0, 256, (3, S, S), dtype=torch.uint8, generator=gen)
        box2 = [0.0, 0.0, 40.0, 40.0] if identical else [16.0, 8.0, 64.0, 56.0]
        batch.append({
            "r2o_views": {
                "view1": view1,
                "view2": view2,
                "whole": whole,
                "boxes": torch.tensor([[0.0, 0.0, 40.0, 40.0], box2]),
                "flips": torch.tensor([False, not identical and i == 0]),
                "superpixels": blocks(G, 8),
            }
        })
    return batch


def test_targets_are_frozen_copies_outside_the_optimizer():
    cfg = tiny_cfg()
    model = Trainer.build_model(cfg)
    targets = list(model.target_parameters())
    assert targets and not any(p.requires_grad for p in targets)
    online = {k: v for k, v in model.state_dict().items() if k.startswith(("backbone.", "projector."))}
    for key, value in online.items():
        assert torch.equal(model.state_dict()["target_" + key], value), key
    assert any(k.startswith("backbone.stem.") for k in online) and any(k.startswith("backbone.res5.") for k in online)
    optimized = {id(p) for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert optimized == trainable
    assert not optimized & {id(p) for p in targets}
    assert {id(p) for p in model.predictor.parameters()} <= optimized


def test_missing_backbone_output_names_the_config_key():
    with pytest.raises(ValueError, match="MODEL.RESNETS.OUT_FEATURES"):
        build(opts=["MODEL.RESNETS.OUT_FEATURES", "['res5']"])
    build(BYOL_TOY, opts=["MODEL.RESNETS.OUT_FEATURES", "['res5']"])  # BYOL needs FEATURE only
    with pytest.raises(ValueError, match="MODEL.R2O.MODE"):
        build(opts=["MODEL.R2O.MODE", "detcon"])
    with pytest.raises(ValueError, match="MODEL.R2O.KMEANS.K_START"):
        build(opts=["MODEL.R2O.KMEANS.K_START", "1"])  # below K_END: K only falls


@pytest.mark.parametrize("config", [R2O_TOY, BYOL_TOY])
def test_identical_views_give_zero_loss_with_an_identity_predictor(config, monkeypatch):
    model = build(config)
    model.train()
    batch = make_batch(identical=True)
    with EventStorage(3) as storage:
        loss = model(batch)["loss_r2o"]
        assert float(loss.detach()) > 0.0  # a random predictor: not vacuous
        model.predictor = nn.Identity()
        loss = model(batch)["loss_r2o"]
        assert storage.latest()["r2o/masks_per_image"][0] > 0
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-5)


def test_the_k_of_an_iteration_is_the_schedules(monkeypatch):
    model = build()
    model.train()
    asked = []
    real = meta_arch_module.kmeans

    def recording(x, k, num_iters, generator):
        asked.append(k)
        return real(x, k, num_iters, generator)

    monkeypatch.setattr(meta_arch_module, "kmeans", recording)
    batch = make_batch()
    iterations = [0, 3, 6, 9]
    ks = []
    with torch.no_grad():
        for it in iterations:
            with EventStorage(it) as storage:
                model(batch)
                ks.append(storage.latest()["r2o/k"][0])
    expected = [k_schedule(it, 10, 16, 2, 1) for it in iterations]
    assert asked == expected == ks
    assert expected[0] == 16 and expected[-1] == 2  # the curriculum moved


def test_clusters_depend_on_seed_and_iteration_only():
    model = build()
    model.train()
    batch = make_batch()
    masks = lambda it: model.view_masks(batch, (4, 4), it)[0]  # noqa: E731
    torch.testing.assert_close(masks(5), masks(5))
    first = lambda it, m=model: torch.rand(4, generator=m.kmeans_generator(it))  # noqa: E731
    assert torch.equal(first(5), first(5)) and not torch.equal(first(5), first(6))
    other = build(opts=["SEED", "1"])
    assert not torch.equal(first(5), first(5, other))


def test_no_gradient_reaches_the_target_networks():
    model = build()
    model.train()
    with EventStorage(0):
        model(make_batch())["loss_r2o"].backward()
    assert all(p.grad is None for p in model.target_parameters())
    assert model.backbone.stem.conv1.weight.grad.abs().sum() > 0
    assert model.projector.linear1.weight.grad.abs().sum() > 0


def test_no_mask_in_both_views_gives_zero_loss_with_every_parameter_in_the_graph():
    model = build()
    model.train()
    model.min_mask_area = 2.0  # no mask can cover more than the whole view
    with EventStorage(0) as storage:
        loss = model(make_batch())["loss_r2o"]
        assert storage.latest()["r2o/masks_per_image"][0] == 0
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert all(torch.isfinite(b.float()).all() for b in model.projector.buffers())  # BN on no rows: unchanged


def test_predict_masks_per_image_and_joint():
    model = build()
    model.eval()
    batch = make_batch()
    for joint in (False, True):
        masks = model.predict_masks(batch, k=3, joint=joint)
        assert len(masks) == 2
        for m in masks:
            assert m.shape == (3, G // 4, G // 4)
            torch.testing.assert_close(m.sum(0), torch.ones(G // 4, G // 4))
    # More clusters than distinct regions: 64 superpixels on a 4 x 4 res4 map
    # have 16 distinct embeddings; the channels K-means could not fill are zero.
    many = model.predict_masks(batch[:1], k=70)[0]
    assert many.shape[0] == 70 and many[16:].abs().sum() == 0
    torch.testing.assert_close(many.sum(0), torch.ones(G // 4, G // 4))
    torch.testing.assert_close(model.predict_masks(batch, k=3)[1], model.predict_masks(batch, k=3)[1])


def test_eval_forward_returns_one_empty_dict_per_image():
    model = build()
    model.eval()
    assert model([{"image": torch.zeros(3, 8, 8)}] * 3) == [{}, {}, {}]


def test_training_inputs_without_views_are_named():
    model = build()
    model.train()
    with EventStorage(0), pytest.raises(KeyError, match="r2o_views"):
        model([{"image": torch.zeros(3, 8, 8)}])


@pytest.fixture(scope="module")
def unlabeled_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("r2o_unlabeled"))


@pytest.mark.parametrize("config", [R2O_TOY, BYOL_TOY])
def test_two_iterations_through_the_trainer(config, isolated_catalogs, unlabeled_root, tmp_path):
    toy.register_toy_unlabeled(unlabeled_root, 4)
    cfg = tiny_cfg(config, ["SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path), "SOLVER.CHECKPOINT_PERIOD", "1000"])
    cfg.freeze()
    trainer = Trainer(cfg)
    kinds = [type(h) for h in trainer._hooks]
    assert kinds.index(R2OTargetUpdate) == kinds.index(d2_hooks.LRScheduler) + 1
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    state = trainer.model.state_dict()
    online_moved = not torch.equal(state["backbone.stem.conv1.weight"], start["backbone.stem.conv1.weight"])
    target_moved = not torch.equal(state["target_backbone.stem.conv1.weight"], start["target_backbone.stem.conv1.weight"])
    assert online_moved and target_moved  # the optimizer trained the online encoder, the EMA moved the target
    assert not torch.equal(state["target_backbone.stem.conv1.weight"], state["backbone.stem.conv1.weight"])
    saved = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    assert any(k.startswith("backbone.res4.") for k in saved) and any(k.startswith("target_backbone.") for k in saved)
    scalars = trainer.storage.latest()
    assert "r2o/momentum" in scalars and "r2o/masks_per_image" in scalars
    assert torch.isfinite(torch.tensor(scalars["total_loss"][0]))


def test_lr_scaled_by_k_through_the_trainer(isolated_catalogs, unlabeled_root, tmp_path):
    toy.register_toy_unlabeled(unlabeled_root, 4)
    opts = ["SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(tmp_path), "SOLVER.CHECKPOINT_PERIOD", "1000",
            "MODEL.R2O.LR_SCALE_K_DIVISOR", "4"]
    cfg = tiny_cfg(R2O_TOY, opts)
    cfg.freeze()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    lrs = [lr for lr, _ in trainer.storage.history("lr").values()]
    # Warm-up from 0 over 1 iteration, then the cosine over 2 iterations: 0, base / 2;
    # K over 2 iterations of one each: 16, then 2.
    base = cfg.SOLVER.BASE_LR
    assert lrs == pytest.approx([0.0, base * 0.5 * 2 / 4])


def test_a_resumed_run_trains_as_an_uninterrupted_one(isolated_catalogs, unlabeled_root, tmp_path):
    """Iteration 1 resumed from iteration 0's checkpoint ends with the same weights,
    target networks included: K, the K-means seed, the EMA momentum and the LR
    scaling all follow from the iteration."""
    import shutil

    toy.register_toy_unlabeled(unlabeled_root, 4)

    def run(output_dir, resume):
        opts = ["SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(output_dir), "SOLVER.CHECKPOINT_PERIOD", "1",
                "MODEL.R2O.LR_SCALE_K_DIVISOR", "4"]
        cfg = tiny_cfg(R2O_TOY, opts)
        cfg.freeze()
        torch.manual_seed(0)
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=resume)
        trainer.train()
        return trainer.model.state_dict()

    whole = run(tmp_path / "whole", resume=False)
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(tmp_path / "whole" / "model_0000000.pth", resumed_dir / "model_0000000.pth")
    (resumed_dir / "last_checkpoint").write_text("model_0000000.pth")
    resumed = run(resumed_dir, resume=True)
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key
