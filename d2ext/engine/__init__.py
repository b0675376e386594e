from .hooks import register_hooks
from .launch import launch
from .predictor import Predictor
from .setup import load_cfg, setup_cfg
from .trainer import Trainer

__all__ = ["Predictor", "Trainer", "launch", "load_cfg", "register_hooks", "setup_cfg"]
