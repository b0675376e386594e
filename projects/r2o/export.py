"""Export an R2O encoder as a pretrained backbone for any detectron2 model.

An R2O checkpoint (detectron2's ``model_final.pth``: ``{"model": state_dict, ...}``)
holds the online encoder under ``backbone.`` and its momentum copy under
``target_backbone.``, each a detectron2 ResNet. The export is a detectron2
model-zoo pickle::

    {"model": {"stem.conv1.weight": ndarray, "res2.0.conv1.norm.running_mean": ..., ...},
     "__author__": "d2ext R2O", "matching_heuristics": True}

with the names of a plain ResNet's state dict. ``DetectionCheckpointer`` reads a
``.pkl`` with ``"model"`` and ``"__author__"`` as is, and ``matching_heuristics``
makes it map each name to the model key it is a dotted suffix of
(``backbone.bottom_up.res2.0.conv1.weight`` in FPN models, ``backbone.res2...``
for a plain ResNet backbone, ``backbone.resnet.res2...`` in ICNet), so one file
serves every method. detectron2 logs and silently skips a name whose shape
differs from the model's; :func:`check_export` checks that itself.
"""
from __future__ import annotations

import logging
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch

from d2ext.engine.checkpoint import write_model_zoo_pickle

__all__ = [
    "ENCODER_PREFIXES",
    "EXPORT_AUTHOR",
    "ExportCheck",
    "ExportError",
    "check_export",
    "encoder_arrays",
    "export_backbone",
    "find_resnet",
    "format_check",
    "load_export",
    "load_model_state",
]

logger = logging.getLogger(__name__)

# Which of the R2O model's two encoders to export -> its prefix in the model's state dict.
ENCODER_PREFIXES = {"online": "backbone.", "target": "target_backbone."}
EXPORT_AUTHOR = "d2ext R2O"

# A batch-norm step counter: only used by BatchNorm with momentum=None (never in
# detectron2's ResNets), absent from FrozenBatchNorm2d (detectron2 freezes stem
# and res2 by default). One that finds no counterpart is not a loading failure.
_COUNTER = "num_batches_tracked"


class ExportError(ValueError):
    """Bad input to the export or its check; the message names the file / config and key."""


def load_model_state(checkpoint: str) -> Dict[str, torch.Tensor]:
    """The model state dict of a detectron2 checkpoint file (``{"model": ...}`` or a bare state dict)."""
    if not os.path.isfile(checkpoint):
        raise ExportError(f"{checkpoint}: no such checkpoint file")
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, a pickle with code, not a torch file
        raise ExportError(f"{checkpoint}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise ExportError(f"{checkpoint}: expected a dict with a 'model' state dict, got {type(data).__name__}")
    return state


def encoder_arrays(
    state: Dict[str, torch.Tensor], encoder: str = "online", source: str = "checkpoint"
) -> "OrderedDict[str, np.ndarray]":
    """The ResNet of one R2O encoder as ``{plain ResNet name: array}``.

    Args:
        state: an R2O model's state dict.
        encoder: "online" (``backbone.*``, the encoder the loss trains) or
            "target" (``target_backbone.*``, its momentum average).
        source: the file name, for error messages.
    """
    if encoder not in ENCODER_PREFIXES:
        raise ExportError(f"encoder must be one of {sorted(ENCODER_PREFIXES)}, got {encoder!r}")
    prefix = ENCODER_PREFIXES[encoder]
    out: "OrderedDict[str, np.ndarray]" = OrderedDict()
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
        out[key[len(prefix):]] = value.detach().cpu().numpy().copy()
    if not out:
        heads = sorted({k.split(".", 1)[0] + "." for k in state})
        raise ExportError(
            f"{source}: no '{prefix}' keys (the {encoder} encoder of an R2O model); "
            f"its keys start with {heads[:10]}"
        )
    if not any(k.startswith("stem.") for k in out):
        raise ExportError(
            f"{source}: the '{prefix}' keys are not a detectron2 ResNet (no '{prefix}stem.*'); "
            f"first keys: {list(out)[:5]}"
        )
    return out


def export_backbone(checkpoint: str, output: str, encoder: str = "online") -> "OrderedDict[str, np.ndarray]":
    """Writes the export pickle of ``checkpoint``'s ``encoder`` to ``output``; returns its arrays."""
    arrays = encoder_arrays(load_model_state(checkpoint), encoder, source=checkpoint)
    write_model_zoo_pickle(arrays, output, EXPORT_AUTHOR)
    logger.info("Exported %d arrays of the %s encoder of %s to %s", len(arrays), encoder, checkpoint, output)
    return arrays


def load_export(path: str) -> Dict[str, np.ndarray]:
    """The arrays of an export pickle (as DetectionCheckpointer reads it)."""
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    if not isinstance(data, dict) or "model" not in data or "__author__" not in data:
        raise ExportError(f"{path}: not a detectron2 model-zoo pickle ({{'model', '__author__'}})")
    return data["model"]


def find_resnet(model: torch.nn.Module, config: str = "model") -> Tuple[str, torch.nn.Module]:
    """The one detectron2 ResNet inside ``model``: (its state-dict prefix, e.g. "backbone.bottom_up.", module)."""
    from detectron2.modeling.backbone.resnet import ResNet

    found = [(name, m) for name, m in model.named_modules() if isinstance(m, ResNet)]
    if len(found) != 1:
        names = [n or "<model>" for n, _ in found]
        raise ExportError(
            f"{config}: the model has {len(found)} detectron2 ResNets {names}; the export loads into exactly one"
        )
    name, module = found[0]
    return (name + "." if name else ""), module


@dataclass
class ExportCheck:
    """What loading an export into one config's model did (keys are the export's plain names)."""

    config: str
    prefix: str  # where the model's ResNet sits, e.g. "backbone.bottom_up."
    num_backbone_keys: int = 0
    num_loaded: int = 0  # backbone keys whose loaded value equals the exported array
    missing: List[str] = field(default_factory=list)  # backbone keys the export did not fill
    unused: List[str] = field(default_factory=list)  # exported keys loaded nowhere
    shape_mismatch: List[str] = field(default_factory=list)  # "key: export (..) vs model (..)"
    value_mismatch: List[str] = field(default_factory=list)  # loaded, but not the exported values
    counters_skipped: List[str] = field(default_factory=list)  # num_batches_tracked without counterpart
    error: str = ""  # the checkpointer itself failed (e.g. an ambiguous match)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unused or self.shape_mismatch or self.value_mismatch or self.error)

    def problems(self) -> List[str]:
        out = [f"error: {self.error}"] if self.error else []
        for label, keys in (
            ("shape mismatch", self.shape_mismatch),
            ("missing in the model's ResNet", self.missing),
            ("exported but unused", self.unused),
            ("loaded values differ", self.value_mismatch),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                out.append(f"{label}: {shown}")
        return out


def _shapes_against(arrays: Dict[str, np.ndarray], expected: Dict[str, torch.Tensor], check: ExportCheck) -> None:
    """Fills missing / unused / shape_mismatch by name, before any loading (detectron2 only logs these)."""
    for key, array in arrays.items():
        if key not in expected:
            (check.counters_skipped if key.endswith(_COUNTER) else check.unused).append(key)
        elif tuple(array.shape) != tuple(expected[key].shape):
            check.shape_mismatch.append(
                f"{check.prefix}{key}: export {tuple(array.shape)} vs model {tuple(expected[key].shape)}"
            )
    check.missing = [k for k in expected if k not in arrays and not k.endswith(_COUNTER)]
    check.counters_skipped += [k for k in expected if k not in arrays and k.endswith(_COUNTER)]


def check_export(model: torch.nn.Module, export_path: str, config: str = "model") -> ExportCheck:
    """Loads ``export_path`` into ``model`` with DetectionCheckpointer and verifies it.

    The model's one detectron2 ResNet (:func:`find_resnet`) must receive every
    one of its keys from the export, with the exported values, and every
    exported key must land in it. The model's weights are overwritten.
    """
    from detectron2.checkpoint import DetectionCheckpointer

    prefix, resnet = find_resnet(model, config)
    expected = resnet.state_dict()
    arrays = load_export(export_path)
    check = ExportCheck(config=config, prefix=prefix, num_backbone_keys=len(expected))
    _shapes_against(arrays, expected, check)

    checkpointer = DetectionCheckpointer(model)
    try:
        # _load_file + _load_model is what Checkpointer.load does, keeping the
        # incompatible keys that load() only logs.
        incompatible = checkpointer._load_model(checkpointer._load_file(export_path))
    except Exception as e:  # detectron2's "Cannot match one checkpoint key to multiple keys"
        check.error = f"{type(e).__name__}: {e}"
        return check
    # What detectron2 itself reports, beyond the check by name: an exported key
    # its heuristic found no home for stays under its plain name (unexpected);
    # a ResNet key with an exported value it did not load stays missing.
    mismatched = {k for k in arrays if k in expected and tuple(arrays[k].shape) != tuple(expected[k].shape)}
    known = set(check.unused) | set(check.counters_skipped) | mismatched
    check.unused += sorted(k for k in set(incompatible.unexpected_keys) if k in arrays and k not in known)
    not_loaded = {k[len(prefix):] for k in incompatible.missing_keys if k.startswith(prefix)}
    check.missing += sorted(k for k in not_loaded if k in arrays and k not in mismatched)

    loaded = resnet.state_dict()
    for key, value in loaded.items():
        if key not in arrays or tuple(arrays[key].shape) != tuple(value.shape):
            continue
        if torch.equal(value.cpu(), torch.as_tensor(arrays[key]).to(value.dtype)):
            check.num_loaded += 1
        else:
            check.value_mismatch.append(f"{prefix}{key}")
    return check


def format_check(check: ExportCheck) -> str:
    """A short Markdown table of one config's check."""
    rows = [
        ("config", check.config),
        ("ResNet in the model", check.prefix.rstrip(".") or "<model>"),
        ("backbone keys", str(check.num_backbone_keys)),
        ("loaded with equal values", str(check.num_loaded)),
        ("missing", str(len(check.missing))),
        ("unused exported", str(len(check.unused))),
        ("shape mismatches", str(len(check.shape_mismatch))),
        ("value mismatches", str(len(check.value_mismatch))),
        (f"{_COUNTER} without counterpart (ignored)", str(len(check.counters_skipped))),
        ("result", "OK" if check.ok else "FAILED"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'':{width}} | |", f"|{'-' * (width + 2)}|---|"]
    lines += [f"| {a:{width}} | {b} |" for a, b in rows]
    return "\n".join(lines)
