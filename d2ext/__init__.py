"""d2ext: shared machinery for segmentation methods on Detectron2.

Importing d2ext adapts detectron2 0.6 to today's libraries (``d2ext.compat``:
only what 0.6 needs to run, nothing that changes results or speed) and
registers d2ext's datasets and extension points. It never imports the methods
(``import d2ext_projects`` does) and changes no detectron2 behaviour; the one
deliberate difference from detectron2, a same-size semantic post-processing
that skips a no-op resize, is applied where d2ext builds models
(``d2ext.engine.Trainer.build_model``), see ``d2ext.postprocessing``.
"""
from . import compat

compat.apply()

from . import data  # noqa: E402  (registers datasets; needs compat first)
from .config import get_cfg, register_config  # noqa: E402
from . import modeling  # noqa: E402  (registers backbones)

__all__ = ["compat", "data", "get_cfg", "modeling", "register_config"]
