"""build_evaluator: the evaluators of a run, from the dataset's metadata and the
model's outputs alone.

``MetadataCatalog.get(name).evaluator_type`` picks a factory; the factory
returns one evaluator per metric family the model's outputs
(``d2ext.model_io.model_outputs(cfg)``) allow. Projects add evaluator types
with ``register_evaluator_type``.
"""
from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from typing import Callable, FrozenSet, List, NamedTuple, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
)

from ..model_io import model_outputs
from ..registry import NamedRegistry
from .checked_sem_seg import CheckedSemSegEvaluator
from .cityscapes_instance import CityscapesInstanceEvaluator
from .cityscapes_semantic import CityscapesSemSegEvaluator

logger = logging.getLogger(__name__)

# (dataset_name, metadata, model outputs, output_dir) -> evaluators (may be empty)
EvaluatorFactory = Callable[[str, object, FrozenSet[str], Optional[str]], List[DatasetEvaluator]]



class EvaluatorType(NamedTuple):
    factory: EvaluatorFactory
    evaluates: str  # what it can evaluate, for error messages


EVALUATOR_TYPES: NamedRegistry[EvaluatorType] = NamedRegistry(
    "D2EXT_EVALUATOR_TYPES",
    hint="Register it with d2ext.evaluation.register_evaluator_type.",
)


def register_evaluator_type(evaluator_type: str, factory: EvaluatorFactory, evaluates: str) -> None:
    """Makes ``evaluator_type`` known to build_evaluator.

    Args:
        factory: (dataset_name, metadata, outputs, output_dir) -> list of evaluators
            for the outputs it can evaluate; empty if none.
        evaluates: a short description for errors, e.g. "instances (mask AP)".
    """
    EVALUATOR_TYPES.register(evaluator_type, EvaluatorType(factory, evaluates))


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluators:
    """Evaluators for ``dataset_name`` given what the configured model outputs.

    Raises:
        KeyError: dataset not registered.
        ValueError: unknown evaluator_type, or none of the model's outputs can be
            evaluated on this dataset (the message names both).
    """
    if dataset_name not in DatasetCatalog.list():
        raise KeyError(f"Dataset {dataset_name!r} is not registered")
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = meta.get("evaluator_type")
    outputs = frozenset(model_outputs(cfg))
    arch = cfg.MODEL.META_ARCHITECTURE
    if evaluator_type not in EVALUATOR_TYPES:
        raise ValueError(
            f"No evaluator for dataset {dataset_name!r}: its metadata evaluator_type="
            f"{evaluator_type!r} is not one of {EVALUATOR_TYPES.names()} (model {arch} outputs "
            f"{sorted(outputs)}). Set evaluator_type in its metadata or register the type "
            "with d2ext.evaluation.register_evaluator_type."
        )
    registered = EVALUATOR_TYPES.get(evaluator_type)
    evaluators = registered.factory(dataset_name, meta, outputs, output_dir)
    if not evaluators:
        raise ValueError(
            f"No evaluator for dataset {dataset_name!r} (evaluator_type={evaluator_type!r}, "
            f"which evaluates {registered.evaluates}): model {arch} outputs "
            f"{sorted(outputs)}."
        )
    logger.info(
        f"Evaluating {dataset_name} ({evaluator_type}, model outputs {sorted(outputs)}) with "
        + ", ".join(type(e).__name__ for e in evaluators)
    )
    return DatasetEvaluators(evaluators)


# ------------------------------------------------------------------- factories


def _coco(name: str, meta, output_dir: Optional[str]) -> COCOEvaluator:
    if not hasattr(meta, "json_file") and output_dir is None:
        # detectron2 converts such datasets to a COCO json it must write somewhere,
        # and points the dataset's metadata at it for the rest of the process: the
        # folder may only go when the process does.
        output_dir = tempfile.mkdtemp(prefix="d2ext_coco_eval_")
        atexit.register(shutil.rmtree, output_dir, ignore_errors=True)
    # tasks inferred from the predictions: bbox, and segm when masks are predicted.
    # The fast evaluation needs compiled ops, pycocotools' is the official one anyway.
    return COCOEvaluator(name, output_dir=output_dir, use_fast_impl=False)


class _SemSegEvaluator(CheckedSemSegEvaluator):
    """detectron2's SemSegEvaluator, also for panoptic datasets whose contiguous ids
    span things and stuff (``stuff_classes`` lists all classes): there the
    prediction dump needs the thing ids too, which ``stuff_dataset_id_to_contiguous_id``
    lacks. Metrics are detectron2's, unchanged; ground truth holding values
    outside the classes and the ignore label is an error (``CheckedSemSegEvaluator``)."""

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None):
        super().__init__(dataset_name, distributed=True, output_dir=output_dir)
        meta = MetadataCatalog.get(dataset_name)
        to_dataset = getattr(self, "_contiguous_id_to_dataset_id", None)
        things = meta.get("thing_dataset_id_to_contiguous_id")
        if to_dataset is not None and things:
            for dataset_id, contiguous in things.items():
                if contiguous < len(meta.stuff_classes):
                    to_dataset.setdefault(contiguous, dataset_id)


def _coco_factory(name, meta, outputs, output_dir):
    return [_coco(name, meta, output_dir)] if "instances" in outputs else []


def _sem_seg_factory(name, meta, outputs, output_dir):
    return [_SemSegEvaluator(name, output_dir)] if "sem_seg" in outputs else []


def _coco_panoptic_factory(name, meta, outputs, output_dir):
    evaluators: List[DatasetEvaluator] = []
    if "panoptic_seg" in outputs:
        evaluators.append(COCOPanopticEvaluator(name, output_dir))
    if "instances" in outputs and hasattr(meta, "json_file"):
        evaluators.append(_coco(name, meta, output_dir))
    if "sem_seg" in outputs and hasattr(meta, "sem_seg_root"):
        evaluators.append(_SemSegEvaluator(name, output_dir))
    return evaluators


def _cityscapes_instance_factory(name, meta, outputs, output_dir):
    return [CityscapesInstanceEvaluator(name, output_dir)] if "instances" in outputs else []


def _cityscapes_sem_seg_factory(name, meta, outputs, output_dir):
    return [CityscapesSemSegEvaluator(name, output_dir)] if "sem_seg" in outputs else []


def _cityscapes_panoptic_factory(name, meta, outputs, output_dir):
    evaluators: List[DatasetEvaluator] = []
    if "panoptic_seg" in outputs:
        evaluators.append(COCOPanopticEvaluator(name, output_dir))
    evaluators += _cityscapes_instance_factory(name, meta, outputs, output_dir)
    evaluators += _cityscapes_sem_seg_factory(name, meta, outputs, output_dir)
    return evaluators


register_evaluator_type("coco", _coco_factory, "instances (box and mask AP)")
register_evaluator_type("sem_seg", _sem_seg_factory, "sem_seg (mIoU)")
register_evaluator_type(
    "coco_panoptic_seg",
    _coco_panoptic_factory,
    "panoptic_seg (PQ); instances (AP) with metadata json_file; sem_seg (mIoU) with "
    "metadata sem_seg_root",
)
register_evaluator_type(
    "cityscapes_instance", _cityscapes_instance_factory, "instances (Cityscapes AP)"
)
register_evaluator_type("cityscapes_sem_seg", _cityscapes_sem_seg_factory, "sem_seg (Cityscapes IoU)")
register_evaluator_type(
    "cityscapes_panoptic_seg",
    _cityscapes_panoptic_factory,
    "panoptic_seg (PQ), instances (Cityscapes AP), sem_seg (Cityscapes IoU)",
)
