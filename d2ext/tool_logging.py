"""One logging set-up for the command-line tools (demo, benchmarks)."""
import contextlib
import logging
from typing import Iterator

from detectron2.utils.logger import setup_logger


def setup_tool_logging() -> None:
    """detectron2's log format for fvcore, detectron2 and d2ext (idempotent: setup_logger caches)."""
    setup_logger(name="fvcore")
    setup_logger()
    setup_logger(name="d2ext", abbrev_name="d2ext")


@contextlib.contextmanager
def quiet_checkpoint_loading(enabled: bool = True) -> Iterator[None]:
    """Silences detectron2's table of matched weights and fvcore's list of keys left random.

    For tools that print their own summary of what loaded (export and conversion
    checks: the heads are random by design, so those lists would bury it).
    Warnings of the matching (shape mismatches) stay on; levels are restored on exit.
    """
    quiet = {"detectron2.checkpoint.c2_model_loading": logging.WARNING,
             "fvcore.common.checkpoint": logging.ERROR} if enabled else {}
    before = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)
