"""Test-wide settings: import d2ext first (compat), quiet third-party deprecation noise,
and make the repository root importable for tests that run its scripts."""
import os
import sys
import warnings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# Toy datasets are generated once per machine under the default location,
# unless the caller chose another $DETECTRON2_DATASETS.
os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO_ROOT, "datasets"))

warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
warnings.filterwarnings("ignore", category=UserWarning, module="torch")

import d2ext  # noqa: E402,F401

# pycocotools' RLE decoding under numpy 2 warns on every call (harmless).
warnings.filterwarnings("ignore", category=DeprecationWarning, module="pycocotools")
