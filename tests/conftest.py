"""Test-wide settings: import d2ext first (compat), quiet third-party deprecation noise,
and make the repository root importable for tests that run its scripts."""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# Toy datasets are generated once per machine under the default location,
# unless the caller chose another $DETECTRON2_DATASETS.
os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO_ROOT, "datasets"))


import d2ext  # noqa: E402,F401


def pytest_configure(config):
    # Third-party noise on every call, harmless here: pycocotools' RLE decoding
    # under numpy 2, torch's deprecation of the JIT that detectron2 0.6 uses.
    for spec in (
        "ignore::DeprecationWarning:pycocotools.*",
        "ignore::FutureWarning:torch.*",
        "ignore::UserWarning:torch.*",
    ):
        config.addinivalue_line("filterwarnings", spec)
