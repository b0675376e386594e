"""The config against the datasets' metadata: class counts and ignore labels.

A model whose ``NUM_CLASSES`` disagrees with its dataset fails far from the
cause (an IndexError in a loss, or a silently wrong evaluation); one whose
ignore value differs from the dataset's trains on unlabeled pixels. So before
the model is built, every configured dataset (``DATASETS.TRAIN`` +
``DATASETS.TEST``, those registered) is compared with the config, and every
disagreement is reported at once, naming the config key, the dataset and its
metadata field, and both numbers.

What to compare is declared per component, selected by a config value (the
meta-architecture, or a head's name), so that a method adds its own keys
without d2ext knowing it::

    from d2ext.engine import Expectation, expect_count, register_consistency_check

    def _my_head(cfg, meta):
        return expect_count("MODEL.MY_HEAD.NUM_CLASSES", cfg.MODEL.MY_HEAD.NUM_CLASSES, meta, "stuff_classes")

    register_consistency_check("MODEL.SEM_SEG_HEAD.NAME", "MyHead", _my_head)

A check returns :class:`Expectation` s for the metadata fields the dataset has
(a semantic dataset has no ``thing_classes``: nothing to compare there).
detectron2's baselines (GeneralizedRCNN, RetinaNet, SemanticSegmentor,
PanopticFPN) are registered here; projects register theirs on import.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, NamedTuple, Optional, Sequence

from detectron2.data import MetadataCatalog

from d2ext.registry import NamedRegistry

__all__ = [
    "CONSISTENCY_CHECKS",
    "ConfigError",
    "Expectation",
    "check_config_against_datasets",
    "expect_count",
    "expect_ignore_label",
    "register_consistency_check",
]


class ConfigError(ValueError):
    """The config disagrees with the datasets it names."""


class Expectation(NamedTuple):
    """One number of the config that must equal one number of a dataset's metadata."""

    key: str  # config key, e.g. "MODEL.SEM_SEG_HEAD.NUM_CLASSES"
    value: int  # its value in the config
    field: str  # metadata field, e.g. "stuff_classes"
    expected: int  # what the metadata says (a class list's length, or the value)
    note: str = ""  # the method's convention, appended to the message


# (cfg, metadata of one dataset) -> what to compare
ConsistencyCheck = Callable[[object, object], Iterable[Expectation]]


class _Registered(NamedTuple):
    selector: str  # config key whose value selects the check
    value: str
    check: ConsistencyCheck


CONSISTENCY_CHECKS: NamedRegistry[_Registered] = NamedRegistry(
    "D2EXT_CONSISTENCY_CHECKS",
    hint="Register one with d2ext.engine.register_consistency_check.",
)


def register_consistency_check(selector: str, value: str, check: ConsistencyCheck) -> ConsistencyCheck:
    """Runs ``check(cfg, metadata)`` for each configured dataset when config key
    ``selector`` (dotted, e.g. "MODEL.META_ARCHITECTURE") equals ``value``."""
    CONSISTENCY_CHECKS.register(f"{selector}={value}", _Registered(selector, value, check))
    return check


def expect_count(key: str, value: int, meta, field: "str | Sequence[str]", note: str = "") -> List[Expectation]:
    """[``key`` == len(meta.<field>)], or [] when the dataset has no such field.

    ``field`` may be a sequence: the first of those fields the dataset has is
    compared (e.g. ("stuff_classes", "thing_classes") for "all its classes").
    """
    for name in (field,) if isinstance(field, str) else field:
        classes = meta.get(name)
        if classes is not None:
            return [Expectation(key, int(value), name, len(classes), note)]
    return []


def expect_ignore_label(key: str, value: int, meta) -> List[Expectation]:
    """[``key`` == meta.ignore_label], or [] when the dataset declares none."""
    ignore = meta.get("ignore_label")
    return [] if ignore is None else [Expectation(key, int(value), "ignore_label", int(ignore))]


def _config_value(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, part):
            return None
        node = getattr(node, part)
    return node


def _message(e: Expectation, dataset: str) -> str:
    has = f"ignore label {e.expected}" if e.field == "ignore_label" else f"{e.expected} classes"
    note = f"; {e.note}" if e.note else ""
    return (
        f"{e.key} = {e.value}, but dataset {dataset!r} has {has} "
        f"(MetadataCatalog.get({dataset!r}).{e.field}){note}"
    )


def check_config_against_datasets(cfg, dataset_names: Optional[Sequence[str]] = None) -> None:
    """Compares the config with each dataset's metadata (default: DATASETS.TRAIN + TEST).

    Unregistered names are skipped (their loading fails later, by name), and so
    are fields a dataset's metadata lacks.

    Raises:
        ConfigError: one line per disagreement.
    """
    if dataset_names is None:
        dataset_names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    registered = set(MetadataCatalog.list())  # .get() would create entries for unknown names
    names = [n for n in dict.fromkeys(dataset_names) if n in registered]
    active = [
        r.check for _, r in CONSISTENCY_CHECKS.items() if _config_value(cfg, r.selector) == r.value
    ]
    problems: List[str] = []
    for name in names:
        meta = MetadataCatalog.get(name)
        for check in active:
            for e in check(cfg, meta):
                if e.value != e.expected:
                    problems.append(_message(e, name))
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))  # two components may share a key


# ------------------------------------------------------- detectron2's baselines

_SEPARATED = (
    "Panoptic FPN's semantic head predicts the stuff classes plus one 'things' class: "
    "use a *_panoptic_separated dataset, whose stuff_classes start with 'things'"
)


def _roi_heads(cfg, meta) -> List[Expectation]:
    return expect_count("MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES, meta, "thing_classes")


def _sem_seg_head(cfg, meta, note: str = "") -> List[Expectation]:
    head = cfg.MODEL.SEM_SEG_HEAD
    return expect_count("MODEL.SEM_SEG_HEAD.NUM_CLASSES", head.NUM_CLASSES, meta, "stuff_classes", note) + (
        expect_ignore_label("MODEL.SEM_SEG_HEAD.IGNORE_VALUE", head.IGNORE_VALUE, meta)
    )


def _retinanet(cfg, meta) -> List[Expectation]:
    return expect_count("MODEL.RETINANET.NUM_CLASSES", cfg.MODEL.RETINANET.NUM_CLASSES, meta, "thing_classes")


register_consistency_check("MODEL.META_ARCHITECTURE", "GeneralizedRCNN", _roi_heads)
register_consistency_check("MODEL.META_ARCHITECTURE", "RetinaNet", _retinanet)
register_consistency_check("MODEL.META_ARCHITECTURE", "SemanticSegmentor", _sem_seg_head)
register_consistency_check(
    "MODEL.META_ARCHITECTURE",
    "PanopticFPN",
    lambda cfg, meta: _roi_heads(cfg, meta) + _sem_seg_head(cfg, meta, _SEPARATED),
)
