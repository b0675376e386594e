"""Config set-up shared by train_net.py and the tools."""
from __future__ import annotations

import logging

import torch
from detectron2.engine import default_setup

from d2ext.config import get_cfg
from d2ext.data.datasets import register_from_config

logger = logging.getLogger(__name__)


def load_cfg(config_file: str, opts=()):
    """get_cfg() + the yaml + ``KEY VALUE`` overrides; registers D2EXT.DATASETS. Not frozen."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    register_from_config(cfg)
    return cfg


def setup_cfg(args):
    """The frozen config of a train_net.py run, with detectron2's logging and seeding."""
    cfg = load_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
