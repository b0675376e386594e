"""R2O: region-to-object self-supervised pretraining (Gokul et al., "Refine and
Represent: Region-to-Object Representation Learning").

Importing this package registers:

- the config keys (``add_r2o_config``, with ``d2ext.config.register_config``);
- its model I/O in ``d2ext.model_io``: the common mapper's ``r2o_views``
  target (two augmented views, the whole image, boxes, flips, superpixels);
  no inference outputs (a pretraining model is exported, not evaluated).
"""
from __future__ import annotations

from d2ext.config import register_config
from d2ext.model_io import register_model_io

from .config import add_r2o_config

__all__ = ["add_r2o_config"]

register_config("r2o", add_r2o_config)
register_model_io(
    "R2O",
    targets=lambda cfg: frozenset({"r2o_views"}),
    outputs=lambda cfg: frozenset(),
)
