"""Trainer hooks of R2O: the momentum (EMA) update of the target networks, and
the reference's learning-rate scaling by the current K.

Both run after detectron2's LRScheduler hook (``d2ext.engine.register_hooks``
places project hooks there) and derive everything from ``trainer.iter``, so a
resumed run continues exactly (the target networks are model parameters and
buffers, saved with the model).
"""
from __future__ import annotations

import logging
from typing import List

import torch
from detectron2.engine import HookBase
from detectron2.solver.lr_scheduler import LRMultiplier
from torch import nn

from .schedules import k_schedule, momentum_schedule

__all__ = ["R2OLRScaleByK", "R2OTargetUpdate", "build_r2o_hooks", "ema_update_"]

logger = logging.getLogger(__name__)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place: every parameter t <- momentum * t + (1 - momentum) * o; every buffer copied.

    Buffers (batch-norm running mean / variance and counters) are copied, not
    averaged: they are statistics, not learned weights. The target runs in
    train mode like the online encoder (batch statistics, as BYOL and the
    reference), so its running statistics matter only in eval mode
    (:meth:`R2O.predict_masks`, the exported ``target`` encoder); copying makes
    them the online encoder's, which its near-equal weights produce, instead of
    statistics accumulated from whatever the target's no-grad forwards saw
    (whole images and views alike), and keeps the whole target a function of
    the online networks' history.
    """
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("ema_update_: the target and online networks have different parameters")
    if t_params:
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)
    for t_buf, o_buf in zip(target.buffers(), online.buffers()):
        t_buf.copy_(o_buf)


class R2OTargetUpdate(HookBase):
    """After the optimizer step of iteration i (0-based), k = i + 1 steps taken:
    target <- EMA(target, online) with momentum 1 - (1 - m0) (cos(pi k / K) + 1) / 2,
    K = SOLVER.MAX_ITER (``schedules.momentum_schedule``).

    The reference updates at the start of its step s with the online weights
    after s updates and the momentum of s; k = i + 1 is that same pairing (the
    momentum of k goes with the online weights after k updates).
    """

    def __init__(self, max_iter: int, base_momentum: float):
        momentum_schedule(0, max_iter, base_momentum)  # validates MODEL.R2O.BASE_MOMENTUM, SOLVER.MAX_ITER
        self.max_iter = max_iter
        self.base_momentum = base_momentum

    def momentum(self, iteration: int) -> float:
        """The momentum applied after the step of ``iteration``."""
        return momentum_schedule(iteration + 1, self.max_iter, self.base_momentum)

    def after_step(self) -> None:
        model = _unwrap(self.trainer.model)
        momentum = self.momentum(self.trainer.iter)
        for target, online in model.target_pairs():
            ema_update_(target, online, momentum)
        self.trainer.storage.put_scalar("r2o/momentum", momentum, smoothing_hint=False)


class R2OLRScaleByK(HookBase):
    """The reference's LR scaling: every parameter group's learning rate, as the
    LR schedule sets it, times K(iteration) / divisor, at every step (warm-up included).

    K is the curriculum's value (not capped at the batch's regions), as the
    reference multiplies by its scheduled K. The schedule's own rates are
    recomputed from the LR scheduler each time, so the scaling never
    compounds, also not after a resume (the optimizer state holds scaled rates,
    and detectron2's LRMultiplier saves only base_lrs and last_epoch).
    """

    def __init__(self, max_iter: int, k_start: int, k_end: int, k_update_period: int, divisor: float):
        if divisor <= 0:
            raise ValueError(f"MODEL.R2O.LR_SCALE_K_DIVISOR={divisor}: expected > 0 (0 turns the scaling off)")
        self.max_iter = max_iter
        self.k_args = (k_start, k_end, k_update_period)
        self.divisor = float(divisor)

    def factor(self, iteration: int) -> float:
        return k_schedule(iteration, self.max_iter, *self.k_args) / self.divisor

    def _scheduled(self) -> List[float]:
        scheduler = self.trainer.scheduler
        if isinstance(scheduler, LRMultiplier):
            return scheduler.get_lr()  # base_lrs x multiplier(last_epoch): stateless
        return scheduler.get_last_lr()

    def _apply(self, iteration: int) -> None:
        scheduled = self._scheduled()
        factor = self.factor(iteration)
        for group, lr in zip(self.trainer.optimizer.param_groups, scheduled):
            group["lr"] = lr * factor

    def before_train(self) -> None:
        self._apply(self.trainer.start_iter)

    def after_step(self) -> None:
        # The LRScheduler hook has just set the next iteration's rates.
        self._apply(self.trainer.iter + 1)


def build_r2o_hooks(cfg, trainer) -> List[HookBase]:
    r = cfg.MODEL.R2O
    hooks: List[HookBase] = [R2OTargetUpdate(cfg.SOLVER.MAX_ITER, r.BASE_MOMENTUM)]
    if r.LR_SCALE_K_DIVISOR > 0:
        if r.MODE != "r2o":
            raise ValueError(
                f"MODEL.R2O.LR_SCALE_K_DIVISOR={r.LR_SCALE_K_DIVISOR} scales the LR by the clustering K, "
                f"which MODEL.R2O.MODE={r.MODE!r} does not have: set it to 0"
            )
        k = r.KMEANS
        hooks.append(
            R2OLRScaleByK(cfg.SOLVER.MAX_ITER, k.K_START, k.K_END, k.K_UPDATE_PERIOD, r.LR_SCALE_K_DIVISOR)
        )
    return hooks
