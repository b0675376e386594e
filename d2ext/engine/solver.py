"""Optimizer and LR schedule from the config, for every project.

Keys: SOLVER.OPTIMIZER ("SGD" | "ADAMW"), BASE_LR, MOMENTUM, NESTEROV,
WEIGHT_DECAY, WEIGHT_DECAY_NORM, WEIGHT_DECAY_EMBED, BIAS_LR_FACTOR,
WEIGHT_DECAY_BIAS, BACKBONE_MULTIPLIER, CLIP_GRADIENTS.* (CLIP_TYPE "value",
"norm" per parameter, or "full_model": one norm over all parameters), and
LR_SCHEDULER_NAME ("WarmupMultiStepLR", "WarmupCosineLR" from detectron2, or
"WarmupPolyLR" with POLY_LR_POWER and POLY_LR_CONSTANT_ENDING).
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, List

import torch
from detectron2.config import CfgNode
from detectron2.solver import build_lr_scheduler as _detectron2_build_lr_scheduler
from detectron2.solver.build import maybe_add_gradient_clipping, reduce_param_groups
from detectron2.solver.lr_scheduler import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import ParamScheduler

_NORM_TYPES = (
    torch.nn.modules.batchnorm._NormBase,
    torch.nn.GroupNorm,
    torch.nn.LayerNorm,
    torch.nn.LocalResponseNorm,
)


def optimizer_param_groups(cfg: CfgNode, model: torch.nn.Module) -> List[Dict[str, Any]]:
    """One group per distinct (lr, weight_decay), as the multi-tensor optimizers like it."""
    solver = cfg.SOLVER
    groups: List[Dict[str, Any]] = []
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or param in seen:
                continue
            seen.add(param)
            lr, weight_decay = solver.BASE_LR, solver.WEIGHT_DECAY
            # DDP wraps the model as "module.": the backbone is still found.
            if module_name.split(".")[0] == "backbone" or module_name.startswith("module.backbone"):
                lr *= solver.BACKBONE_MULTIPLIER
            if isinstance(module, _NORM_TYPES):
                weight_decay = solver.WEIGHT_DECAY_NORM
            elif isinstance(module, torch.nn.Embedding):
                weight_decay = solver.WEIGHT_DECAY_EMBED
            if param_name == "bias":
                lr *= solver.BIAS_LR_FACTOR
                if solver.WEIGHT_DECAY_BIAS is not None:
                    weight_decay = solver.WEIGHT_DECAY_BIAS
            groups.append({"params": [param], "lr": lr, "weight_decay": weight_decay})
    return reduce_param_groups(groups)


def _with_full_model_clipping(optimizer_type: type, max_norm: float, norm_type: float) -> type:
    """An optimizer class whose step first clips the gradient norm over all parameters."""

    def step(self, closure=None):
        params = itertools.chain(*[g["params"] for g in self.param_groups])
        torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        return optimizer_type.step(self, closure)

    return type(optimizer_type.__name__ + "WithFullModelClipping", (optimizer_type,), {"step": step})


def build_optimizer(cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
    solver = cfg.SOLVER
    params = optimizer_param_groups(cfg, model)
    name = solver.OPTIMIZER.upper()
    if name == "SGD":
        optimizer_type, kwargs = torch.optim.SGD, {"momentum": solver.MOMENTUM, "nesterov": solver.NESTEROV}
    elif name == "ADAMW":
        optimizer_type, kwargs = torch.optim.AdamW, {}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER={solver.OPTIMIZER!r}: expected 'SGD' or 'ADAMW'")

    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED and clip.CLIP_TYPE == "full_model":
        optimizer_type = _with_full_model_clipping(optimizer_type, clip.CLIP_VALUE, clip.NORM_TYPE)
        return optimizer_type(params, lr=solver.BASE_LR, **kwargs)
    if clip.ENABLED and clip.CLIP_TYPE not in ("value", "norm"):
        raise ValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE={clip.CLIP_TYPE!r}: expected 'value', 'norm' or 'full_model'"
        )
    return maybe_add_gradient_clipping(cfg, optimizer_type)(params, lr=solver.BASE_LR, **kwargs)


class PolyParamScheduler(ParamScheduler):
    """(1 - where) ** power, held at ``constant_ending`` once it falls below it (if > 0)."""

    def __init__(self, power: float, constant_ending: float = 0.0):
        self.power = power
        self.constant_ending = constant_ending

    def __call__(self, where: float) -> float:
        value = (1.0 - where) ** self.power
        if self.constant_ending > 0 and value < self.constant_ending:
            return self.constant_ending
        return value


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer):
    solver = cfg.SOLVER
    if solver.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return _detectron2_build_lr_scheduler(cfg, optimizer)
    schedule = WarmupParamScheduler(
        PolyParamScheduler(solver.POLY_LR_POWER, solver.POLY_LR_CONSTANT_ENDING),
        solver.WARMUP_FACTOR,
        min(solver.WARMUP_ITERS / solver.MAX_ITER, 1.0),
        solver.WARMUP_METHOD,
    )
    return LRMultiplier(optimizer, multiplier=schedule, max_iter=solver.MAX_ITER)
