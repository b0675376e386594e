"""Metadata (class names, colors, id maps) derived from a list of COCO-style categories.

The three flavours follow d2ext/data/CONVENTIONS.md:

- instances: thing classes only, contiguous ids 0..T-1 in dataset-id order.
- panoptic (non-separated): one contiguous id space over all categories, things
  first (each group in dataset-id order), so a thing's contiguous id is the same
  in ``annotations`` and in ``segments_info``. ``thing_classes`` lists the T
  things (COCOEvaluator needs one name per category of the instances json);
  ``stuff_classes`` lists all classes and ``stuff_dataset_id_to_contiguous_id``
  maps every category (as MaskFormer registers COCO panoptic), so the semantic
  evaluator can score the all-class semantic labels of the same dataset.
- panoptic separated (Panoptic FPN): things 0..T-1 for instances; semantic ids
  0 = any thing, 1..S = stuff, as detectron2's separated COCO registration.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = [
    "instances_metadata",
    "panoptic_metadata",
    "panoptic_separated_metadata",
    "semantic_metadata",
    "sorted_categories",
]

# detectron2 picked this color for the merged "things" class of the separated flavour.
_THINGS_COLOR = [82, 18, 128]


def sorted_categories(categories: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """Things first, then stuff; each group by dataset id. A missing ``isthing`` means thing."""
    return sorted(categories, key=lambda c: (not c.get("isthing", 1), c["id"]))


def _colors(cats: Sequence[Mapping[str, Any]]) -> Optional[List[List[int]]]:
    """The categories' colors, or None unless every one has a color."""
    if any("color" not in c for c in cats):
        return None
    return [list(c["color"]) for c in cats]


def instances_metadata(categories: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """thing_classes / thing_colors / thing_dataset_id_to_contiguous_id of an instances json."""
    things = sorted(categories, key=lambda c: c["id"])
    meta: Dict[str, Any] = {
        "thing_classes": [c["name"] for c in things],
        "thing_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(things)},
    }
    if _colors(things) is not None:
        meta["thing_colors"] = _colors(things)
    return meta


def panoptic_metadata(categories: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Metadata of a non-separated panoptic dataset (one id space over all classes)."""
    cats = sorted_categories(categories)
    things = [c for c in cats if c.get("isthing", 1)]
    meta: Dict[str, Any] = {
        "thing_classes": [c["name"] for c in things],
        "stuff_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(things)},
        "stuff_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(cats)},
    }
    if _colors(cats) is not None:
        meta["thing_colors"] = _colors(things)
        meta["stuff_colors"] = _colors(cats)
    return meta


def panoptic_separated_metadata(categories: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Metadata of a separated panoptic dataset (Panoptic FPN): stuff ids 1..S, 0 = things."""
    cats = sorted_categories(categories)
    things = [c for c in cats if c.get("isthing", 1)]
    stuff = [c for c in cats if not c.get("isthing", 1)]
    stuff_map = {int(c["id"]): i + 1 for i, c in enumerate(stuff)}
    stuff_map[0] = 0
    meta: Dict[str, Any] = {
        "thing_classes": [c["name"] for c in things],
        "thing_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(things)},
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }
    if _colors(cats) is not None:
        meta["thing_colors"] = _colors(things)
        meta["stuff_colors"] = [list(_THINGS_COLOR)] + _colors(stuff)
    return meta


def semantic_metadata(categories: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Metadata of a semantic dataset labelled with the all-class contiguous ids."""
    meta = panoptic_metadata(categories)
    out = {
        "stuff_classes": meta["stuff_classes"],
        "stuff_dataset_id_to_contiguous_id": meta["stuff_dataset_id_to_contiguous_id"],
    }
    if "stuff_colors" in meta:
        out["stuff_colors"] = meta["stuff_colors"]
    return out
