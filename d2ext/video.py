"""Frames in, overlay frames out: the video loop of ``tools/demo.py --video-input / --webcam``.

    stats = run_video(open_capture("in.mp4"), predict, draw, "out/in.mp4", max_frames=100)
    stats["fps_end_to_end"], stats["fps_inference"]

Frames are (H, W, 3) uint8 BGR, as OpenCV reads and writes them. Frames per
second are reported two ways: inference alone (the median time of the
``predict`` calls) and end to end (all frames over the whole loop: read,
predict, draw, write).
"""
from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Any, Callable, Dict, Iterator, Optional, Union

import cv2
import numpy as np

__all__ = ["VideoError", "frames", "open_capture", "run_video", "write_video"]

logger = logging.getLogger(__name__)


class VideoError(RuntimeError):
    """A video or camera that cannot be opened or written; the message names it."""


def open_capture(source: Union[str, int]) -> cv2.VideoCapture:
    """A capture of a video file (path) or a camera (index); raises VideoError if it does not open."""
    if isinstance(source, str) and not os.path.isfile(source):
        raise VideoError(f"--video-input {source!r}: no such file")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        what = f"camera {source}" if isinstance(source, int) else f"video {source!r}"
        raise VideoError(f"cannot open {what} with OpenCV")
    return capture


def frames(capture: cv2.VideoCapture, max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """The capture's (H, W, 3) uint8 BGR frames, at most ``max_frames``; releases it at the end."""
    try:
        n = 0
        while max_frames is None or n < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            n += 1
            yield frame
    finally:
        capture.release()


def write_video(images, path: str, fps: float = 10.0) -> int:
    """Writes (H, W, 3) uint8 BGR images (all one size) as an mp4 (mp4v); returns the count."""
    writer, n = None, 0
    try:
        for image in images:
            if writer is None:
                h, w = image.shape[:2]
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                if not writer.isOpened():
                    raise VideoError(f"cannot write {path!r} with OpenCV's mp4v codec")
            writer.write(np.ascontiguousarray(image))
            n += 1
    finally:
        if writer is not None:
            writer.release()
    return n


def run_video(
    capture: cv2.VideoCapture,
    predict: Callable[[np.ndarray], Any],
    draw: Callable[[np.ndarray, Any], np.ndarray],
    output_path: str,
    *,
    max_frames: Optional[int] = None,
    output_fps: Optional[float] = None,
) -> Dict[str, Any]:
    """Runs ``predict`` on every frame, writes ``draw(frame, prediction)`` (BGR) to ``output_path``.

    Returns:
        {"frames", "output", "input_fps", "fps_inference" (from the median predict
        time), "inference_ms_median", "fps_end_to_end", "seconds"}.
    """
    input_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    fps = output_fps or (input_fps if input_fps > 0 else 10.0)
    times = []
    start = time.perf_counter()

    def overlays():
        for frame in frames(capture, max_frames):
            t0 = time.perf_counter()
            prediction = predict(frame)
            times.append(time.perf_counter() - t0)
            yield draw(frame, prediction)

    n = write_video(overlays(), output_path, fps)
    seconds = time.perf_counter() - start
    if n == 0:
        raise VideoError("the video has no frames that OpenCV can decode")
    median = statistics.median(times)
    stats = {
        "frames": n, "output": output_path, "input_fps": input_fps,
        "inference_ms_median": median * 1e3, "fps_inference": 1.0 / median if median > 0 else float("inf"),
        "fps_end_to_end": n / seconds, "seconds": seconds,
    }
    logger.info("%d frames -> %s: %.1f FPS inference (median %.1f ms), %.1f FPS end to end",
                n, output_path, stats["fps_inference"], stats["inference_ms_median"], stats["fps_end_to_end"])
    return stats
