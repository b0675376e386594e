#!/usr/bin/env python
"""Draw a model's predictions on images: one overlay PNG per input image.

    python tools/demo.py --config-file CFG --input IMG_OR_DIR_OR_GLOB [...] \\
        --output DIR [--confidence-threshold 0.5] [--max-images N] \\
        [--points "x,y x,y ..." | --points-json FILE] [KEY VALUE ...]

Works for every d2ext model: it draws whatever the model returns, preferring
``panoptic_seg``, then ``sem_seg``, then ``instances`` (those scoring at least
the threshold), with the class names of ``DATASETS.TEST[0]`` (or ``TRAIN[0]``).
Inference follows detectron2's DefaultPredictor (``d2ext.engine.Predictor``):
the image is read in BGR, flipped to RGB if ``INPUT.FORMAT`` asks, resized by
``INPUT.MIN/MAX_SIZE_TEST``, and predictions come back at the original size.
Trailing ``KEY VALUE`` pairs override the config (e.g. ``MODEL.WEIGHTS
output/model_final.pth``).

Clicks, for a model that accepts point prompts (``d2ext.model_io``, e.g.
AdaptIS): ``--points "x,y x,y"`` sends the same points (original-image pixels)
with every image; ``--points-json FILE`` sends each image its own, from a json
object mapping an image's file name (or its path as given) to a list of
``[x, y]``. The clicks are drawn on the overlay. A model that accepts no points
is an error before any image is read.

Video: ``--video-input FILE`` (or ``--webcam``, camera 0, where one exists)
runs the model on every frame (``--max-frames N``) and writes the overlays to
``OUTPUT/<name>.mp4`` (mp4v, the input's frame rate), logging frames per second
of inference and end to end. ``--exported DIR`` (images or video) runs an export
of tools/export_model.py instead of the eager model: ONNX Runtime or
TorchScript, frames resized to the export's input size (the real-time case is
ICNet); its export.json gives the class count, the config the class names.

An input that cannot be read is skipped with a warning naming it; the demo
goes on, and exits with status 1 at the end if it skipped any.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import d2ext_projects  # noqa: F401  (d2ext first, then every method's registration; needs `make setup`)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data.detection_utils import read_image  # noqa: E402

from d2ext.data.datasets.checks import UNREADABLE_IMAGE_ERRORS  # noqa: E402
from d2ext.tool_logging import setup_tool_logging as setup_logging  # noqa: E402
from d2ext.engine import Predictor  # noqa: E402
from d2ext.engine.predictor import PromptError  # noqa: E402
from d2ext.visualization import (  # noqa: E402
    draw_points,
    draw_predictions,
    metadata_from_cfg,
    predictions_summary,
)

logger = logging.getLogger("d2ext.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class UsageError(ValueError):
    """A bad argument (no such input, no weights): reported without a traceback."""


class SkippedInputsError(RuntimeError):
    """Some inputs could not be read; the others were processed (``written``)."""

    def __init__(self, skipped: Sequence[str], written: Sequence[str]):
        self.skipped, self.written = list(skipped), list(written)
        super().__init__(
            f"skipped {len(self.skipped)} unreadable input(s): {', '.join(self.skipped)}; "
            f"wrote {len(self.written)} overlay(s)"
        )


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Draw a d2ext model's predictions on images.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  python tools/demo.py --config-file CFG "
        "--input 'datasets/toy/images/val/*.png' "
        "--output out/ MODEL.WEIGHTS output/model_final.pth",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+",
        help="image files, folders (their images) or glob patterns (quote them: 'dir/*.png')",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video: overlays to OUTPUT/<name>.mp4")
    source.add_argument("--webcam", action="store_true", help="camera 0: overlays to OUTPUT/webcam.mp4")
    parser.add_argument("--max-frames", type=int, default=None, help="video / webcam: stop after N frames")
    parser.add_argument(
        "--exported", metavar="DIR", default=None,
        help="run this tools/export_model.py export (ONNX Runtime / TorchScript) instead of the eager model",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch / ONNX Runtime threads")
    parser.add_argument("--output", required=True, help="folder for the overlay PNGs")
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5,
        help="lowest score of an instance to draw; also the models' test-time score thresholds",
    )
    parser.add_argument("--max-images", type=int, default=None, help="process at most N images")
    clicks = parser.add_mutually_exclusive_group()
    clicks.add_argument(
        "--points", default=None, metavar='"X,Y X,Y ..."',
        help="clicks sent with every image, in its pixels (models that take point prompts)",
    )
    clicks.add_argument(
        "--points-json", default=None, metavar="FILE",
        help='clicks per image: {"image.png": [[x, y], ...], ...} (file name or path as given)',
    )
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


def parse_points(text: str, source: str = "--points") -> np.ndarray:
    """ "x,y x,y ..." -> (N, 2) float64; a clear error names the bad pair."""
    points = []
    for token in text.replace(";", " ").split():
        parts = token.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise UsageError(f"{source}: {token!r} is not an x,y pair (e.g. --points \"12,30 40.5,8\")")
        if not (np.isfinite(x) and np.isfinite(y)):
            raise UsageError(f"{source}: {token!r} is not finite")
        points.append((x, y))
    if not points:
        raise UsageError(f"{source}: no points in {text!r}")
    return np.array(points, dtype=np.float64)


def load_points_json(path: str) -> Dict[str, np.ndarray]:
    """{image file name or path: (N, 2)} from a json object of [[x, y], ...] lists."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise UsageError(f"--points-json {path!r}: {e.strerror}")
    except json.JSONDecodeError as e:
        raise UsageError(f"--points-json {path!r}: not valid json ({e})")
    if not isinstance(data, dict):
        raise UsageError(f"--points-json {path!r}: expected an object {{image: [[x, y], ...]}}")
    out = {}
    for key, value in data.items():
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):  # ragged lists, strings
            array = np.zeros((0,))
        if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
            raise UsageError(f"--points-json {path!r}: entry {key!r} is not a list of [x, y] numbers")
        out[key] = array
    return out


def points_for(path: str, per_image: Optional[Dict[str, np.ndarray]]) -> Optional[np.ndarray]:
    """The clicks of one input path: by the path as given, else by its file name."""
    if per_image is None:
        return None
    if path in per_image:
        return per_image[path]
    return per_image.get(os.path.basename(path))


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
    if getattr(args, "exported", None):  # the weights are in the export
        cfg.freeze()
        return cfg
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


def _read_or_warn(path: str) -> Optional[np.ndarray]:
    """The image in BGR, or None (with a warning naming it) if it cannot be read."""
    try:
        image = read_image(path, format="BGR")
    except (*UNREADABLE_IMAGE_ERRORS, ValueError) as e:  # ValueError: a bad header of some formats
        logger.warning("skipping %s: cannot read it as an image (%s: %s)", path, type(e).__name__, e)
        return None
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) == 0:
        logger.warning("skipping %s: decoded to shape %s, not an (H, W, 3) image", path, image.shape)
        return None
    return image


def build_predictor(cfg, args):
    """The eager Predictor, or with --exported the export's ExportedPredictor (same call)."""
    if not args.exported:
        return Predictor(cfg)
    from d2ext.deploy.predictor import ExportedPredictor

    try:
        return ExportedPredictor(args.exported, threads=args.threads)
    except FileNotFoundError as e:
        raise UsageError(f"--exported: {e}")


def main_video(args) -> Dict[str, object]:
    """--video-input / --webcam: overlays of every frame to OUTPUT/<name>.mp4; returns run_video's stats."""
    from d2ext.video import VideoError, open_capture, run_video

    cfg = setup_cfg(args)
    metadata = metadata_from_cfg(cfg)
    predictor = build_predictor(cfg, args)
    if args.points is not None or args.points_json is not None:
        raise UsageError("--points / --points-json apply to --input images, not to video")
    source = 0 if args.webcam else args.video_input
    name = "webcam" if args.webcam else os.path.splitext(os.path.basename(args.video_input))[0]
    out_path = os.path.join(args.output, f"{name}.mp4")
    try:
        capture = open_capture(source)
    except VideoError as e:
        raise UsageError(str(e))
    synchronize = cfg.MODEL.DEVICE.startswith("cuda") and not args.exported

    def predict(frame_bgr):
        predictions = predictor(frame_bgr)
        if synchronize:
            torch.cuda.synchronize()
        return predictions

    def draw(frame_bgr, predictions):
        overlay = draw_predictions(frame_bgr[:, :, ::-1], predictions, metadata,
                                   confidence_threshold=args.confidence_threshold)
        return overlay[:, :, ::-1]

    stats = run_video(capture, predict, draw, out_path, max_frames=args.max_frames)
    backend = "eager" if not args.exported else predictor.model.backend
    logger.info("%s (%s): %d frames, %.1f FPS inference, %.1f FPS end to end -> %s", name, backend,
                stats["frames"], stats["fps_inference"], stats["fps_end_to_end"], out_path)
    with open(os.path.join(args.output, f"{name}.json"), "w") as f:
        json.dump({**stats, "backend": backend, "config_file": args.config_file}, f, indent=2)
    return stats


def main(args) -> List[str]:
    """Runs the demo; returns the paths of the written overlays.

    Raises:
        UsageError: a bad argument, before any image is processed.
        SkippedInputsError: at the end, if some inputs could not be read.
    """
    setup_logging()
    logger.info("Arguments: %s", args)

    if not os.path.isfile(args.config_file):
        raise UsageError(f"--config-file {args.config_file!r}: no such file")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.video_input is not None or args.webcam:
        return [main_video(args)["output"]]
    paths = expand_inputs(args.input)
    if args.max_images is not None:
        paths = paths[: args.max_images]
    shared_points = parse_points(args.points) if args.points is not None else None
    per_image = load_points_json(args.points_json) if args.points_json is not None else None
    cfg = setup_cfg(args)
    metadata = metadata_from_cfg(cfg)
    predictor = build_predictor(cfg, args)
    if (shared_points is not None or per_image is not None) and args.exported:
        raise UsageError("--points / --points-json: an export takes no prompts; run the eager model")
    if shared_points is not None or per_image is not None:
        try:
            predictor.check_prompts(points=np.zeros((0, 2)))
        except PromptError as e:
            raise UsageError(f"--points/--points-json: {e}")
    os.makedirs(args.output, exist_ok=True)

    written, skipped = [], []
    for i, (path, name) in enumerate(zip(paths, output_names(paths))):
        image_bgr = _read_or_warn(path)
        if image_bgr is None:
            skipped.append(path)
            continue
        points = shared_points if shared_points is not None else points_for(path, per_image)
        start = time.perf_counter()
        predictions = predictor(image_bgr, points=points)
        if cfg.MODEL.DEVICE.startswith("cuda"):
            torch.cuda.synchronize()
        infer_s = time.perf_counter() - start
        overlay_rgb = draw_predictions(
            image_bgr[:, :, ::-1], predictions, metadata,
            confidence_threshold=args.confidence_threshold,
        )
        if points is not None:
            overlay_rgb = draw_points(overlay_rgb, points)
        out_path = os.path.join(args.output, name)
        if not cv2.imwrite(out_path, np.ascontiguousarray(overlay_rgb[:, :, ::-1])):
            raise OSError(f"could not write {out_path}")
        written.append(out_path)
        clicks = "" if points is None else f", {len(points)} click(s)"
        logger.info(
            "[%d/%d] %s (%dx%d%s): %s in %.3f s -> %s",
            i + 1, len(paths), path, image_bgr.shape[1], image_bgr.shape[0], clicks,
            predictions_summary(predictions, args.confidence_threshold), infer_s, out_path,
        )
    logger.info("Wrote %d overlays to %s", len(written), args.output)
    if skipped:
        raise SkippedInputsError(skipped, written)
    return written


if __name__ == "__main__":
    parser = get_parser()
    try:
        main(parser.parse_args())
    except UsageError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    except SkippedInputsError as e:
        parser.exit(1, f"{parser.prog}: {e}\n")
