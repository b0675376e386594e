#!/usr/bin/env python
"""Draw a model's predictions on images: one overlay PNG per input image.

    python tools/demo.py --config-file CFG --input IMG_OR_DIR_OR_GLOB [...] \\
        --output DIR [--confidence-threshold 0.5] [--max-images N] [KEY VALUE ...]

Works for every d2ext model: it draws whatever the model returns, preferring
``panoptic_seg``, then ``sem_seg``, then ``instances`` (those scoring at least
the threshold), with the class names of ``DATASETS.TEST[0]`` (or ``TRAIN[0]``).
Inference follows detectron2's DefaultPredictor: the image is read in BGR,
flipped to RGB if ``INPUT.FORMAT`` asks, resized by ``INPUT.MIN/MAX_SIZE_TEST``,
and predictions come back at the original size. Trailing ``KEY VALUE`` pairs
override the config (e.g. ``MODEL.WEIGHTS output/model_final.pth``).
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from typing import List, Sequence

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration; needs `make setup`)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.engine import DefaultPredictor  # noqa: E402

from d2ext.tool_logging import setup_tool_logging as setup_logging  # noqa: E402
from d2ext.visualization import (  # noqa: E402
    draw_predictions,
    metadata_from_cfg,
    predictions_summary,
)

logger = logging.getLogger("d2ext.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class UsageError(ValueError):
    """A bad argument (no such input, no weights): reported without a traceback."""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Draw a d2ext model's predictions on images.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python tools/demo.py --config-file CFG "
        "--input 'datasets/toy/images/val/*.png' "
        "--output out/ MODEL.WEIGHTS output/model_final.pth",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--input", nargs="+", required=True,
        help="image files, folders (their images) or glob patterns (quote them: 'dir/*.png')",
    )
    parser.add_argument("--output", required=True, help="folder for the overlay PNGs")
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5,
        help="lowest score of an instance to draw; also the models' test-time score thresholds",
    )
    parser.add_argument("--max-images", type=int, default=None, help="process at most N images")
    parser.add_argument(
        "opts", default=[], nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


def expand_inputs(patterns: Sequence[str]) -> List[str]:
    """Image paths of each input (a file, a folder's images, or a glob), in order, once each.

    Raises:
        UsageError: naming every input that matches no image file.
    """
    paths: List[str] = []
    unmatched: List[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(pattern, f)
                for f in os.listdir(pattern)
                if f.lower().endswith(IMAGE_EXTENSIONS)
            )
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(
                p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS)
            )
        if not found:
            unmatched.append(pattern)
        paths += found
    if unmatched:
        raise UsageError(
            "--input matched no image file ({}): {}".format(
                "/".join(IMAGE_EXTENSIONS), ", ".join(repr(p) for p in unmatched)
            )
        )
    seen = set()
    unique = []
    for p in paths:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_names(paths: Sequence[str]) -> List[str]:
    """``<stem>.png`` for each path; stems shared by several inputs get ``_1``, ``_2``, ..."""
    names, used = [], set()
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0]
        name, k = f"{stem}.png", 0
        while name in used:
            k += 1
            name = f"{stem}_{k}.png"
        used.add(name)
        names.append(name)
    return names


def threshold_opts(threshold: float) -> List[str]:
    """Test-time score thresholds of detectron2's models, as detectron2's demo sets them.

    They go before the user's ``KEY VALUE`` pairs, which therefore win.
    """
    value = str(threshold)
    return [
        "MODEL.RETINANET.SCORE_THRESH_TEST", value,
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", value,
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", value,
    ]


def setup_cfg(args):
    from d2ext.engine import load_cfg

    cfg = load_cfg(args.config_file, threshold_opts(args.confidence_threshold) + list(args.opts))
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        raise UsageError(
            "MODEL.WEIGHTS is empty: the demo needs trained weights, "
            "e.g. append `MODEL.WEIGHTS output/model_final.pth`"
        )
    if "://" not in weights and not os.path.isfile(weights):
        raise UsageError(f"MODEL.WEIGHTS={weights!r}: no such file")
    cfg.freeze()
    return cfg


def main(args) -> List[str]:
    """Runs the demo; returns the paths of the written overlays."""
    setup_logging()
    logger.info("Arguments: %s", args)

    if not os.path.isfile(args.config_file):
        raise UsageError(f"--config-file {args.config_file!r}: no such file")
    paths = expand_inputs(args.input)
    if args.max_images is not None:
        paths = paths[: args.max_images]
    cfg = setup_cfg(args)
    metadata = metadata_from_cfg(cfg)
    predictor = DefaultPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)

    written = []
    for i, (path, name) in enumerate(zip(paths, output_names(paths))):
        image_bgr = read_image(path, format="BGR")
        start = time.perf_counter()
        predictions = predictor(image_bgr)
        if cfg.MODEL.DEVICE.startswith("cuda"):
            torch.cuda.synchronize()
        infer_s = time.perf_counter() - start
        overlay_rgb = draw_predictions(
            image_bgr[:, :, ::-1], predictions, metadata,
            confidence_threshold=args.confidence_threshold,
        )
        out_path = os.path.join(args.output, name)
        if not cv2.imwrite(out_path, np.ascontiguousarray(overlay_rgb[:, :, ::-1])):
            raise OSError(f"could not write {out_path}")
        written.append(out_path)
        logger.info(
            "[%d/%d] %s (%dx%d): %s in %.3f s -> %s",
            i + 1, len(paths), path, image_bgr.shape[1], image_bgr.shape[0],
            predictions_summary(predictions, args.confidence_threshold), infer_s, out_path,
        )
    logger.info("Wrote %d overlays to %s", len(written), args.output)
    return written


if __name__ == "__main__":
    parser = get_parser()
    try:
        main(parser.parse_args())
    except UsageError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
