"""d2ext: shared machinery for segmentation methods on Detectron2.

Importing d2ext first adapts detectron2 0.6 to today's libraries (see
``d2ext.compat``), then registers the built-in datasets and makes semantic
post-processing skip same-size resizes (``d2ext.postprocessing``).
"""
from . import compat

compat.apply()

from . import data  # noqa: E402  (registers datasets; needs compat first)
from .config import get_cfg  # noqa: E402
from . import postprocessing  # noqa: E402

postprocessing.install()

__all__ = ["compat", "data", "get_cfg"]
