"""One logging set-up for the command-line tools (demo, benchmarks)."""
from detectron2.utils.logger import setup_logger


def setup_tool_logging() -> None:
    """detectron2's log format for fvcore, detectron2 and d2ext (idempotent: setup_logger caches)."""
    setup_logger(name="fvcore")
    setup_logger()
    setup_logger(name="d2ext", abbrev_name="d2ext")
