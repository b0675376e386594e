import d2ext  # noqa: F401  (compat first)
import pytest
import torch

from d2ext.config import get_cfg
from d2ext.engine.solver import PolyParamScheduler, build_lr_scheduler, build_optimizer


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        self.query_embed = torch.nn.Embedding(5, 4)
        self.head = torch.nn.Linear(4, 2)


def _cfg(**solver):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY = 0.01
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _settings_of(optimizer, param):
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return group["lr"], group["weight_decay"]
    raise AssertionError("parameter not in the optimizer")


def test_param_groups_apply_backbone_multiplier_norm_and_embedding_decay():
    model = TinyModel()
    cfg = _cfg(OPTIMIZER="ADAMW", BACKBONE_MULTIPLIER=0.1, WEIGHT_DECAY_NORM=0.0, WEIGHT_DECAY_EMBED=0.5)
    opt = build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    assert _settings_of(opt, model.backbone[0].weight) == pytest.approx((0.01, 0.01))
    assert _settings_of(opt, model.backbone[1].weight) == pytest.approx((0.01, 0.0))
    assert _settings_of(opt, model.query_embed.weight) == pytest.approx((0.1, 0.5))
    assert _settings_of(opt, model.head.weight) == pytest.approx((0.1, 0.01))
    # every trainable parameter exactly once
    listed = [p for g in opt.param_groups for p in g["params"]]
    assert len(listed) == len(list(model.parameters())) == len({id(p) for p in listed})


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="LAMB"), TinyModel())


def test_full_model_clipping_bounds_the_total_gradient_norm():
    model = TinyModel()
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.5
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
    opt = build_optimizer(cfg, model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert grads.norm().item() == pytest.approx(0.5, rel=1e-4)
    # the step used the clipped gradients: plain SGD moves by lr * grad
    moved = before["head.bias"] - model.head.bias.detach()
    assert torch.allclose(moved, 0.1 * model.head.bias.grad, atol=1e-6)


def test_poly_schedule_matches_formula_with_warmup_and_constant_ending():
    model = TinyModel()
    cfg = _cfg(LR_SCHEDULER_NAME="WarmupPolyLR", MAX_ITER=100, WARMUP_ITERS=0, POLY_LR_POWER=0.9)
    opt = build_optimizer(cfg, model)
    sched = build_lr_scheduler(cfg, opt)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * (1 - i / 100) ** 0.9 for i in range(100)]
    base = opt.param_groups[0]["initial_lr"] if "initial_lr" in opt.param_groups[0] else 0.1
    assert [lr / base for lr in lrs] == pytest.approx([e / 0.1 for e in expected], rel=1e-6)
    ending = PolyParamScheduler(0.9, constant_ending=0.2)
    assert ending(0.99) == 0.2 and ending(0.0) == 1.0
