"""Tiny random-init models for the tools' tests: configs, weights and script loading."""
import importlib.util
import os

import pytest

import d2ext  # noqa: F401  (before detectron2: compat)
from detectron2 import model_zoo

from d2ext.config import get_cfg

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ResNet-18 FPN with narrow heads and small test sizes: fast on 2 shared CPU cores.
_TINY = [
    "MODEL.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "96",
    "INPUT.MIN_SIZE_TRAIN", "(64,)",
    "INPUT.MAX_SIZE_TRAIN", "96",
]
_MODELS = {
    "instance": (
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml",
        [
            "MODEL.ROI_HEADS.NUM_CLASSES", "3",
            "TEST.DETECTIONS_PER_IMAGE", "5",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
            "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
            "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
            "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "100",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", "20",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
            "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
        ],
    ),
    "semantic": (
        "Misc/semantic_R_50_FPN_1x.yaml",
        ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"],
    ),
}


def write_tiny_config(directory, kind: str) -> str:
    """A self-contained yaml of a tiny ``kind`` ("instance" or "semantic") model.

    No datasets: the zoo's (COCO) have other class counts than these tiny
    models, which d2ext refuses when it builds a model (d2ext.engine.consistency).
    """
    zoo_file, extra = _MODELS[kind]
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(zoo_file))
    cfg.merge_from_list(_TINY + extra + ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"])
    path = os.path.join(str(directory), f"tiny_{kind}.yaml")
    with open(path, "w") as f:
        f.write(cfg.dump())
    return path


def save_random_weights(config_file: str, directory) -> str:
    """Builds the model of ``config_file`` with random weights and saves them; returns the path."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    model = build_model(cfg)
    os.makedirs(str(directory), exist_ok=True)
    DetectionCheckpointer(model, save_dir=str(directory)).save("model_final")
    return os.path.join(str(directory), "model_final.pth")


def load_tool(name: str):
    """Imports tools/<name>.py (tools/ is not a package) as a module."""
    path = os.path.join(REPO_ROOT, "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"d2ext_tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Session-wide: {kind: (config_file, weights)} for the tiny instance and semantic models."""
    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for kind in _MODELS:
        config_file = write_tiny_config(root, kind)
        out[kind] = (config_file, save_random_weights(config_file, root / kind))
    return out


@pytest.fixture(scope="session", autouse=True)
def _loggers_on_session_stdout():
    """Set up the tools' loggers once, outside any test's capsys: detectron2's
    setup_logger is cached and keeps the stdout it first saw, which a capsys
    test would close."""
    load_tool("benchmark").setup_logging()
