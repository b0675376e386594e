from .consistency import (
    ConfigError,
    Expectation,
    check_config_against_datasets,
    expect_count,
    expect_ignore_label,
    register_consistency_check,
)
from .hooks import register_hooks
from .launch import launch
from .predictor import Predictor
from .setup import load_cfg, setup_cfg
from .trainer import Trainer

__all__ = [
    "ConfigError",
    "Expectation",
    "Predictor",
    "Trainer",
    "check_config_against_datasets",
    "expect_count",
    "expect_ignore_label",
    "launch",
    "load_cfg",
    "register_consistency_check",
    "register_hooks",
    "setup_cfg",
]
