from .launch import launch
from .setup import load_cfg, setup_cfg
from .trainer import Trainer

__all__ = ["Trainer", "launch", "load_cfg", "setup_cfg"]
