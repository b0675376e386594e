"""Small ICNet models built from the toy configs, for the ICNet tests."""
import importlib.util
import os

import pytest
import torch

import d2ext_projects  # noqa: F401  (d2ext first, then ICNet's registration)
from d2ext.engine import Trainer, load_cfg

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TOY_CONFIGS = {
    "image": os.path.join(REPO_ROOT, "configs", "icnet", "toy", "icnet_R18_toy.yaml"),
    "feature": os.path.join(REPO_ROOT, "configs", "icnet", "toy", "icnet_R18_feature_toy.yaml"),
}

# Narrow ICNet layers: the tests check wiring and shapes, not capacity.
SMALL = [
    "MODEL.ICNET.LOW_CHANNELS", "32",
    "MODEL.ICNET.CFF_CHANNELS", "16",
    "MODEL.ICNET.HIGH_CHANNELS", "[8, 8, 16]",
]


def load_benchmark_icnet():
    """tools/benchmark_icnet.py as a module (tools/ is not a package)."""
    path = os.path.join(REPO_ROOT, "tools", "benchmark_icnet.py")
    spec = importlib.util.spec_from_file_location("d2ext_tools_benchmark_icnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(variant: str = "image", opts=(), train: bool = False):
    cfg = load_cfg(TOY_CONFIGS[variant], SMALL + list(opts))
    cfg.freeze()
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    return cfg, model.train(train)


@pytest.fixture(scope="session", autouse=True)
def _loggers_on_session_stdout():
    """Set up the loggers once outside any capsys test: detectron2's setup_logger is
    cached and keeps the stdout it first saw (see tests/tools/conftest.py)."""
    load_benchmark_icnet().setup_logging()


@pytest.fixture(params=["image", "feature"])
def variant(request):
    return request.param
