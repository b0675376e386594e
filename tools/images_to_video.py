#!/usr/bin/env python
"""Make an mp4 from images (e.g. the toy val set), to feed ``tools/demo.py --video-input``.

    python tools/images_to_video.py --input "datasets/toy/images/val/*.png" \\
        --output output/deploy/toy_val.mp4 [--fps 10] [--max-images N]

Images are taken in sorted order; every one is resized to the first one's size.
"""
from __future__ import annotations

import argparse
import glob
import logging
from typing import List, Optional, Sequence

import cv2

from d2ext.tool_logging import setup_tool_logging
from d2ext.video import write_video

logger = logging.getLogger("d2ext.images_to_video")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="a glob pattern (quote it)")
    parser.add_argument("--output", required=True, help="the .mp4 to write")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args(argv)
    setup_tool_logging()
    paths: List[str] = sorted(glob.glob(args.input))[: args.max_images]
    if not paths:
        parser.exit(2, f"images_to_video.py: error: --input {args.input!r} matches no file\n")
    first = cv2.imread(paths[0])
    if first is None:
        parser.exit(2, f"images_to_video.py: error: cannot read {paths[0]}\n")
    size = (first.shape[1], first.shape[0])

    def images():
        for p in paths:
            image = cv2.imread(p)
            if image is None:
                logger.warning("skipping %s: not an image OpenCV reads", p)
                continue
            yield image if image.shape[1::-1] == size else cv2.resize(image, size)

    n = write_video(images(), args.output, args.fps)
    logger.info("Wrote %d frames (%dx%d, %.1f s at %g FPS) to %s", n, size[0], size[1], n / args.fps,
                args.fps, args.output)
    return n


if __name__ == "__main__":
    main()
