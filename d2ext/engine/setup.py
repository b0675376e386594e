"""Config set-up shared by train_net.py and the tools."""
from __future__ import annotations

import logging

import torch
from detectron2.engine import default_setup

from d2ext.config import get_cfg
from d2ext.data.datasets import register_from_config, registered_spec, toy

logger = logging.getLogger(__name__)


def load_cfg(config_file: str, opts=()):
    """get_cfg() + the yaml + ``KEY VALUE`` overrides; registers D2EXT.DATASETS and
    D2EXT.TOY_UNLABELED_NUM_IMAGES's count of toy_unlabeled_train. Not frozen."""
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    opts = list(opts)
    flags = [o for o in opts[::2] if isinstance(o, str) and o.startswith("--")]
    if flags:
        # argparse hands everything after the first KEY VALUE pair to the overrides
        raise ValueError(
            f"config overrides contain the option {flags[0]!r}: options must come before the "
            "KEY VALUE overrides on the command line"
        )
    cfg.merge_from_list(opts)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    register_from_config(cfg)
    _register_unlabeled_count(cfg.D2EXT.TOY_UNLABELED_NUM_IMAGES)
    return cfg


def _register_unlabeled_count(num_images: int) -> None:
    """toy_unlabeled_train with ``num_images`` images, on the root it is registered on now."""
    spec = registered_spec(toy.TOY_UNLABELED_NAME)
    if spec is None:  # unregistered by the user: nothing to resize
        return
    if int(num_images) != (spec["num_images"] or toy.TOY_UNLABELED_NUM_IMAGES):
        toy.register_toy_unlabeled(spec["root"], num_images)


def setup_cfg(args):
    """The frozen config of a train_net.py run, with detectron2's logging and seeding."""
    cfg = load_cfg(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
