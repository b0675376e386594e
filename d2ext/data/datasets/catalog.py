"""Registration in detectron2's catalogs, remembering what each name was registered with.

Every d2ext registration records a *spec* (a plain, comparable dict: the kind of
dataset and its paths) next to the name. Registering the same name with the same
spec again is a no-op, which makes registration safe to repeat in every process
and on every import; a different spec under a taken name is an error unless the
caller explicitly replaces it (the builtin names replace detectron2's own).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog

from .checks import DatasetError

__all__ = ["get_datasets_root", "register_dataset", "registered_spec", "unregister_dataset"]

logger = logging.getLogger(__name__)

# name -> (spec, loader) of the registrations d2ext made
_SPECS: Dict[str, Tuple[Dict[str, Any], Callable]] = {}


def _ours(name: str) -> Optional[Dict[str, Any]]:
    """The spec of ``name`` if the registration in DatasetCatalog is still d2ext's."""
    entry = _SPECS.get(name)
    if entry is None or DatasetCatalog.data.get(name) is not entry[1]:
        return None
    return entry[0]


def get_datasets_root(root: Optional[str] = None) -> str:
    """``root`` if given, else ``$DETECTRON2_DATASETS``, else ``"datasets"`` (detectron2's rule)."""
    if root is not None:
        return os.fspath(root)
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def registered_spec(name: str) -> Optional[Dict[str, Any]]:
    """The spec d2ext registered ``name`` with, or None (not registered, or not by d2ext)."""
    spec = _ours(name)
    return None if spec is None else dict(spec)


def unregister_dataset(name: str) -> None:
    """Removes ``name`` from both catalogs (whoever registered it); no-op if absent."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    _SPECS.pop(name, None)


def register_dataset(
    name: str,
    spec: Mapping[str, Any],
    loader: Callable[[], List[dict]],
    metadata: Mapping[str, Any],
    replace: bool = False,
) -> bool:
    """Registers ``loader`` and ``metadata`` under ``name``, unless already registered identically.

    Args:
        name: the dataset name.
        spec: what identifies this registration (kind, paths, options); compared
            with ``==`` to a previous registration of the same name.
        loader: returns the dataset dicts; must not run at registration.
        metadata: set on ``MetadataCatalog.get(name)``.
        replace: replace a registration of ``name`` with another spec (or one made
            outside d2ext) instead of raising.

    Returns:
        True if registered now, False if an identical registration was already there.

    Raises:
        DatasetError: ``name`` is taken by a different registration and not ``replace``.
    """
    if not isinstance(name, str) or not name:
        raise DatasetError(f"a dataset name must be a non-empty string, got {name!r}")
    spec = dict(spec)
    taken = name in DatasetCatalog.list()
    if taken and _ours(name) == spec:
        return False
    if taken:
        if not replace:
            previous = _ours(name)
            what = f"with {previous}" if previous is not None else "outside d2ext"
            raise DatasetError(
                f"dataset {name!r} is already registered {what}; cannot register it again "
                f"with {spec}. Use another name, or remove the old one first."
            )
        logger.debug("Replacing the registration of dataset %r", name)
        unregister_dataset(name)
    meta = MetadataCatalog.get(name)  # may hold what a user set before registering
    clashes = {
        k: meta.get(k) for k, v in metadata.items() if k in meta.as_dict() and meta.get(k) != v
    }
    if clashes:
        raise DatasetError(
            f"MetadataCatalog already holds {sorted(clashes)} for {name!r} with other values "
            f"than this registration of it sets; MetadataCatalog.remove({name!r}) first."
        )
    meta.set(**metadata)
    DatasetCatalog.register(name, loader)
    _SPECS[name] = (spec, loader)
    return True
