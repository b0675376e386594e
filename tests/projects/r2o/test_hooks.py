"""R2O's trainer hooks: the EMA update of the target networks against a hand
computation, the momentum schedule it applies, and the LR scaling by K (no
compounding, also after a resume)."""
import types

import pytest
import torch
from detectron2.solver.lr_scheduler import LRMultiplier
from fvcore.common.param_scheduler import CosineParamScheduler
from torch import nn

from d2ext_projects.r2o.hooks import R2OLRScaleByK, R2OTargetUpdate, build_r2o_hooks, ema_update_
from d2ext_projects.r2o.schedules import k_schedule, momentum_schedule


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    net[1].running_mean.uniform_()
    net[1].running_var.uniform_(1, 2)
    net[1].num_batches_tracked.fill_(seed + 1)
    return net


def test_ema_update_against_hand_computation():
    online, target = _net(0), _net(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    m = 0.9
    ema_update_(target, online, m)
    for name, value in online.named_parameters():
        expected = m * before[name] + (1 - m) * value.detach()
        torch.testing.assert_close(target.state_dict()[name], expected)
    for name, value in online.named_buffers():  # copied, not averaged
        assert torch.equal(target.state_dict()[name], value)


def test_ema_update_with_momentum_one_keeps_the_parameters():
    online, target = _net(0), _net(1)
    weight = target[0].weight.clone()
    ema_update_(target, online, 1.0)
    assert torch.equal(target[0].weight, weight)


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.target_backbone = _net(0), _net(1)
        self.projector, self.target_projector = nn.Linear(2, 2), nn.Linear(2, 2)

    def target_pairs(self):
        return [(self.target_backbone, self.backbone), (self.target_projector, self.projector)]


class _Storage:
    def __init__(self):
        self.scalars = {}

    def put_scalar(self, name, value, smoothing_hint=True):
        self.scalars[name] = value


def test_target_update_after_a_step_uses_the_momentum_of_the_steps_taken():
    model = _Model()
    wrapped = types.SimpleNamespace(module=model)  # as DistributedDataParallel holds it
    hook = R2OTargetUpdate(max_iter=10, base_momentum=0.99)
    hook.trainer = types.SimpleNamespace(model=wrapped, iter=3, storage=_Storage())
    old = model.target_projector.weight.clone()
    hook.after_step()
    m = momentum_schedule(4, 10, 0.99)
    assert m == pytest.approx(1 - 0.01 * (torch.cos(torch.tensor(torch.pi * 0.4)).item() + 1) / 2)
    torch.testing.assert_close(
        model.target_projector.weight, m * old + (1 - m) * model.projector.weight.detach()
    )
    assert hook.trainer.storage.scalars["r2o/momentum"] == pytest.approx(m)


def test_target_update_checks_the_base_momentum():
    with pytest.raises(ValueError, match="MODEL.R2O.BASE_MOMENTUM"):
        R2OTargetUpdate(max_iter=10, base_momentum=1.5)


def _lr_trainer(max_iter: int, base_lr: float = 0.1):
    params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": [params[0]], "lr": base_lr}, {"params": [params[1]], "lr": base_lr / 2}])
    scheduler = LRMultiplier(optimizer, CosineParamScheduler(1.0, 0.0), max_iter)
    return types.SimpleNamespace(optimizer=optimizer, scheduler=scheduler, iter=0, start_iter=0)


def test_lr_is_the_schedules_times_k_over_the_divisor_at_every_step():
    max_iter, k_args = 20, (16, 2, 4)
    trainer = _lr_trainer(max_iter)
    hook = R2OLRScaleByK(max_iter, *k_args, divisor=4)
    hook.trainer = trainer
    hook.before_train()
    for it in range(max_iter - 1):
        scheduled = [0.1 * (1 + torch.cos(torch.tensor(torch.pi * it / max_iter)).item()) / 2]
        scheduled.append(scheduled[0] / 2)
        factor = k_schedule(it, max_iter, *k_args) / 4
        assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([s * factor for s in scheduled])
        # what detectron2's LRScheduler hook does after a step, then ours
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.iter = it
        hook.after_step()


def test_lr_scaling_does_not_compound_after_a_resume():
    max_iter, k_args = 20, (16, 2, 4)
    trainer = _lr_trainer(max_iter)
    hook = R2OLRScaleByK(max_iter, *k_args, divisor=4)
    hook.trainer = trainer
    hook.before_train()
    for it in range(7):
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.iter = it
        hook.after_step()
    expected = [g["lr"] for g in trainer.optimizer.param_groups]
    # A resumed run: the optimizer's saved (scaled) rates and the scheduler's state.
    resumed = _lr_trainer(max_iter)
    resumed.optimizer.load_state_dict(trainer.optimizer.state_dict())
    resumed.scheduler.load_state_dict(trainer.scheduler.state_dict())
    resumed.start_iter = 7
    hook2 = R2OLRScaleByK(max_iter, *k_args, divisor=4)
    hook2.trainer = resumed
    hook2.before_train()
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx(expected)


def _cfg(mode: str, divisor: float):
    from d2ext.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.R2O.MODE = mode
    cfg.MODEL.R2O.LR_SCALE_K_DIVISOR = divisor
    return cfg


def test_hook_factory():
    assert [type(h) for h in build_r2o_hooks(_cfg("r2o", 0), None)] == [R2OTargetUpdate]
    assert [type(h) for h in build_r2o_hooks(_cfg("r2o", 16), None)] == [R2OTargetUpdate, R2OLRScaleByK]
    assert [type(h) for h in build_r2o_hooks(_cfg("byol", 0), None)] == [R2OTargetUpdate]
    with pytest.raises(ValueError, match="LR_SCALE_K_DIVISOR"):
        build_r2o_hooks(_cfg("byol", 16), None)
