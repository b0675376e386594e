"""What the two Cityscapes evaluators share: gathering, the working folder, and
calling cityscapesscripts' evaluation modules safely.

cityscapesscripts' evaluation modules keep their settings in a module-level
``args`` object and stop the process (``sys.exit``) on any problem. Here each
evaluation runs on a private copy of that object, with its printing captured and
its exits turned into exceptions.
"""
from __future__ import annotations

import contextlib
import copy
import glob
import io
import itertools
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

logger = logging.getLogger(__name__)


def core_name(path: str) -> str:
    """'<city>_<seq>_<frame>', the part shared by all files of one Cityscapes image."""
    return "_".join(os.path.basename(path).split("_")[:3])


def cityscapes_args(module, **settings) -> Any:
    """A copy of ``module.args`` (cityscapesscripts' settings object) with ``settings`` set.

    The module's own object is never changed, so evaluations cannot leak settings
    into each other.
    """
    args = copy.copy(module.args)
    for key, value in settings.items():
        if not hasattr(args, key):
            raise AttributeError(f"{module.__name__}.args has no setting {key!r}")
        setattr(args, key, value)
    return args


def run_cityscapes(fn: Callable, *args) -> Any:
    """Runs a cityscapesscripts function quietly; its errors raise RuntimeError.

    What it prints goes to the debug log; its ``printError`` (print + ``sys.exit``)
    becomes a RuntimeError carrying the printed message.
    """
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            result = fn(*args)
    except SystemExit as e:
        raise RuntimeError(
            f"cityscapesscripts' {fn.__module__}.{fn.__name__} failed: "
            f"{out.getvalue().strip()[-2000:] or e}"
        ) from None
    except Exception:
        if out.getvalue().strip():
            logger.warning(f"cityscapesscripts printed before failing:\n{out.getvalue()[-2000:]}")
        raise
    if out.getvalue().strip():
        logger.debug(out.getvalue())
    return result


class CityscapesEvaluatorBase(DatasetEvaluator):
    """Collects per-image predictions on every process; the main process writes
    them in Cityscapes' result format and runs the official evaluation.

    Args:
        dataset_name: a dataset whose metadata has ``gt_dir`` (gtFine/<split>).
        output_dir: where to keep the written predictions (a subfolder,
            emptied first); None uses a temporary folder removed afterwards.
        distributed: gather predictions from all processes to the main one.
    """

    _result_subdir = "cityscapes"

    def __init__(
        self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True
    ):
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        if not hasattr(self._metadata, "gt_dir"):
            raise ValueError(
                f"{type(self).__name__} needs metadata 'gt_dir' (gtFine/<split>) for dataset "
                f"{dataset_name!r}; register it with d2ext.data.datasets.cityscapes"
            )
        self._output_dir = output_dir
        self._distributed = distributed
        self._cpu_device = torch.device("cpu")
        self._predictions: List[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def _gathered(self) -> Optional[List[dict]]:
        """All processes' predictions on the main process, None elsewhere."""
        if not self._distributed:
            return self._predictions
        comm.synchronize()
        gathered = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        return list(itertools.chain(*gathered))

    def _ground_truth(self, predictions: List[dict], suffix: str) -> List[str]:
        """The gtFine file (``*_gtFine_<suffix>``) of each prediction, in order."""
        gt_dir = os.path.abspath(self._metadata.gt_dir)
        index = {
            core_name(p): p for p in glob.glob(os.path.join(gt_dir, "*", f"*_gtFine_{suffix}"))
        }
        if not index:
            raise FileNotFoundError(
                f"No Cityscapes ground truth {os.path.join(gt_dir, '<city>', '*_gtFine_' + suffix)} "
                f"for dataset {self._dataset_name!r}"
            )
        missing = [p["file_name"] for p in predictions if p["core"] not in index]
        if missing:
            raise FileNotFoundError(
                f"No *_gtFine_{suffix} under {gt_dir} for {len(missing)} evaluated images, "
                f"e.g. {missing[0]}"
            )
        if len({p["core"] for p in predictions}) < len(index):
            logger.warning(
                f"{self._dataset_name}: predictions cover {len(predictions)} of the "
                f"{len(index)} ground-truth images under {gt_dir}; evaluating those only."
            )
        return [index[p["core"]] for p in predictions]

    @contextlib.contextmanager
    def _working_dir(self) -> Iterator[str]:
        if self._output_dir:
            path = os.path.abspath(os.path.join(self._output_dir, self._result_subdir))
            # Leftovers of an earlier run would be read as extra predictions.
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            yield path
        else:
            with tempfile.TemporaryDirectory(prefix=f"{self._result_subdir}_") as path:
                yield os.path.abspath(path)

    @staticmethod
    def _unique_by_image(predictions: List[dict]) -> List[dict]:
        # An image seen twice (e.g. padded distributed sampling) is evaluated once.
        seen: Dict[str, dict] = {}
        for p in predictions:
            seen.setdefault(p["core"], p)
        return list(seen.values())
