"""R2O: region-to-object self-supervised pretraining (Gokul et al., "Refine and
Represent: Region-to-Object Representation Learning").

Importing this package registers:

- ``R2O`` in detectron2's META_ARCH_REGISTRY (and its BYOL mode,
  ``MODEL.R2O.MODE: "byol"``);
- the config keys (``add_r2o_config``, with ``d2ext.config.register_config``);
- the ``r2o_views`` target builder of the common mapper (``views.py``: two
  augmented views, the whole image, crop boxes, flips, SLIC superpixels);
- its model I/O in ``d2ext.model_io``: the ``r2o_views`` target; no
  inference outputs (a pretraining model is exported, not evaluated);
- its trainer hooks (``d2ext.engine.register_hooks``): the momentum update of
  the target networks after every step and, with
  ``MODEL.R2O.LR_SCALE_K_DIVISOR > 0``, the reference's LR scaling by K.
"""
from __future__ import annotations

from d2ext.config import register_config
from d2ext.engine import register_hooks
from d2ext.model_io import register_model_io

from . import views  # noqa: F401  (registers the "r2o_views" target)
from .config import add_r2o_config
from .hooks import R2OLRScaleByK, R2OTargetUpdate, build_r2o_hooks, ema_update_
from .meta_arch import R2O

__all__ = ["R2O", "R2OLRScaleByK", "R2OTargetUpdate", "add_r2o_config", "build_r2o_hooks", "ema_update_"]

register_config("r2o", add_r2o_config)
register_model_io(
    "R2O",
    targets=lambda cfg: frozenset({"r2o_views"}),
    outputs=lambda cfg: frozenset(),
)
register_hooks("R2O", build_r2o_hooks)
