"""Dataset errors and the checks that need pixel data.

Loaders validate what the annotation files say (json structure, ids, file
existence) once per dataset. What only the pixels can tell is checked per image
by whoever decodes the label files (the common mapper), with these small pure
functions. Every check raises :class:`DatasetError` with a message that names
the file and the offending ids or sizes, so bad data fails loudly instead of
becoming wrong training targets.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "UNREADABLE_IMAGE_ERRORS",
    "DatasetError",
    "check_panoptic_png",
    "check_label_size",
    "check_label_values",
    "present_values",
]

_MAX_LISTED = 10  # ids listed in a message before "..."


# What PIL raises on a file it cannot decode: OSError (truncated, unidentified,
# missing), SyntaxError (some plugins' "broken PNG file"), and the decompression
# bomb guard.
UNREADABLE_IMAGE_ERRORS = (OSError, SyntaxError, Image.DecompressionBombError)


class DatasetError(ValueError):
    """A dataset's files are missing, malformed or disagree with each other."""


def _fmt_ids(ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    shown = ", ".join(str(i) for i in ids[:_MAX_LISTED])
    more = f", ... ({len(ids)} in all)" if len(ids) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


def check_panoptic_png(
    pan_ids: np.ndarray, segments_info: Iterable[Mapping], png_path: str
) -> None:
    """Checks that a panoptic PNG and its ``segments_info`` name the same segments.

    Args:
        pan_ids: (H, W) integer segment ids decoded from the PNG
            (id = R + 256 G + 256² B); 0 is void.
        segments_info: the image's segments, each with an ``id`` (and ``area``:
            a segment declared with area 0 may be absent from the PNG).
        png_path: the PNG's path, for the message.

    Raises:
        DatasetError: naming the PNG and the segment ids found in only one of the two.
    """
    in_png = np.unique(np.asarray(pan_ids))
    in_png = in_png[in_png != 0]
    declared = {int(s["id"]) for s in segments_info}
    must_appear = {int(s["id"]) for s in segments_info if s.get("area", 1) != 0}
    undeclared = sorted(set(in_png.tolist()) - declared)
    absent = sorted(must_appear - set(in_png.tolist()))
    problems = []
    if undeclared:
        problems.append(
            f"segment ids {_fmt_ids(undeclared)} appear in the PNG but not in segments_info"
        )
    if absent:
        problems.append(f"segment ids {_fmt_ids(absent)} are in segments_info but not in the PNG")
    if problems:
        raise DatasetError(
            f"{png_path}: panoptic PNG disagrees with its json: " + "; ".join(problems)
        )


def check_label_size(
    label: np.ndarray, image_hw: Tuple[int, int], label_path: str, image_path: str
) -> None:
    """Checks that a label map (semantic or panoptic) has its image's size.

    Args:
        label: (H, W) or (H, W, C) label array.
        image_hw: (H, W) of the image.
        label_path, image_path: paths, for the message.

    Raises:
        DatasetError: naming both files and both sizes.
    """
    lh, lw = (int(s) for s in np.shape(label)[:2])
    ih, iw = (int(s) for s in image_hw[:2])
    if (lh, lw) != (ih, iw):
        raise DatasetError(
            f"{label_path}: label size {lh}x{lw} (HxW) differs from the size {ih}x{iw} "
            f"of its image {image_path}"
        )


def present_values(label: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer label map; a bincount for uint8 maps
    (one pass, no sort: cheap enough to run on every training image)."""
    label = np.asarray(label)
    if label.dtype == np.uint8:
        return np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    return np.unique(label)


def check_label_values(
    label: np.ndarray,
    num_classes: int,
    ignore_label: int,
    label_path: str,
    image_path: Optional[str] = None,
) -> None:
    """Checks that a semantic label map holds only ids in [0, num_classes) or ``ignore_label``.

    Args:
        label: (H, W) integer label map.
        num_classes: number of classes (``len(metadata.stuff_classes)``).
        ignore_label: the value marking unlabeled pixels.
        label_path: the file's path, for the message.
        image_path: the image it labels, for the message (optional).

    Raises:
        DatasetError: naming the file(s), the out-of-range values, the valid
            range and the ignore label.
    """
    label = np.asarray(label)
    if label.size == 0:
        return
    values = present_values(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if not len(bad):
        return
    of_image = f" (labels of image {image_path})" if image_path else ""
    raise DatasetError(
        f"{label_path}: label values {_fmt_ids(bad.tolist())} are neither class ids in "
        f"[0, {num_classes}) nor the ignore label {ignore_label}{of_image}"
    )
