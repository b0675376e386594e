"""Trainer hooks of AdaptIS: stage 2 refuses to start without stage 1's weights,
and logs its adaptive threshold."""
from __future__ import annotations

import os
from typing import List

from detectron2.engine import HookBase

__all__ = ["AdaptISStage2Hook", "MissingStage1WeightsError", "build_adaptis_hooks", "check_stage2_weights"]


class MissingStage1WeightsError(ValueError):
    """Stage 2 was asked to train without stage 1's weights."""


def check_stage2_weights(cfg) -> None:
    """Raises :class:`MissingStage1WeightsError` unless MODEL.WEIGHTS names stage 1's checkpoint."""
    weights = cfg.MODEL.WEIGHTS
    hint = (
        "MODEL.ADAPTIS.TRAIN.STAGE=2 trains the proposal head on top of a trained stage-1 model, "
        "whose other parts it freezes: set MODEL.WEIGHTS to stage 1's model_final.pth"
    )
    if not weights:
        raise MissingStage1WeightsError(f"MODEL.WEIGHTS is empty. {hint}")
    if "://" not in weights and not os.path.isfile(weights):
        raise MissingStage1WeightsError(f"MODEL.WEIGHTS={weights!r} does not exist. {hint}")


class AdaptISStage2Hook(HookBase):
    """Puts the adaptive binarisation threshold into the event storage each step."""

    def after_step(self) -> None:
        model = self.trainer.model
        model = getattr(model, "module", model)  # DistributedDataParallel
        self.trainer.storage.put_scalar("adaptis/iou_thresh", float(model.iou_thresh), smoothing_hint=False)


def build_adaptis_hooks(cfg, trainer) -> List[HookBase]:
    if cfg.MODEL.ADAPTIS.TRAIN.STAGE != 2:
        return []
    check_stage2_weights(cfg)
    return [AdaptISStage2Hook()]
