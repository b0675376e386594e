"""tools/demo.py --video-input: an overlay video with one frame per input frame, FPS reported,
from the eager model and from an ONNX export; --webcam without a camera is a named error."""
import json

import cv2
import numpy as np
import pytest

from d2ext.video import write_video

from .conftest import load_tool

demo = load_tool("demo")
export_tool = load_tool("export_model")
H, W, N = 48, 64, 5


@pytest.fixture
def video(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "clip.mp4")
    assert write_video((rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N)), path, fps=5) == N
    return path


def _frames(path):
    capture = cv2.VideoCapture(path)
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(frame)


def _run(*argv):
    return demo.main(demo.get_parser().parse_args([str(a) for a in argv]))


def test_video_overlays_eager_and_exported(tiny_model_dir, video, tmp_path):
    config, weights = tiny_model_dir["semantic"]
    out = tmp_path / "eager"
    (path,) = _run("--config-file", config, "--video-input", video, "--output", out, "MODEL.WEIGHTS", weights)
    frames = _frames(path)
    assert len(frames) == N and frames[0].shape == (H, W, 3)
    stats = json.loads((out / "clip.json").read_text())
    assert stats["frames"] == N and stats["fps_inference"] > 0 and stats["fps_end_to_end"] > 0
    assert stats["backend"] == "eager"

    export_dir = tmp_path / "export"
    export_tool.main(["--config-file", config, "--output", str(export_dir), "--input-size", "64", "96",
                      "--no-verify", "MODEL.WEIGHTS", weights])
    out2 = tmp_path / "onnx"
    (path2,) = _run("--config-file", config, "--video-input", video, "--output", out2,
                    "--exported", export_dir, "--max-frames", "3")
    assert len(_frames(path2)) == 3
    assert json.loads((out2 / "clip.json").read_text())["backend"] == "onnxruntime"


def test_missing_video_and_camera_are_usage_errors(tiny_model_dir, tmp_path):
    config, weights = tiny_model_dir["semantic"]
    with pytest.raises(demo.UsageError, match="no such file"):
        _run("--config-file", config, "--video-input", tmp_path / "none.mp4", "--output", tmp_path,
             "MODEL.WEIGHTS", weights)
    if cv2.VideoCapture(0).isOpened():
        pytest.skip("this machine has a camera")
    with pytest.raises(demo.UsageError, match="cannot open camera 0"):
        _run("--config-file", config, "--webcam", "--output", tmp_path, "MODEL.WEIGHTS", weights)


def test_images_to_video_resizes_to_the_first_image(tmp_path):
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(32, 48), (40, 40), (32, 48)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    out = str(tmp_path / "v.mp4")
    assert load_tool("images_to_video").main(["--input", str(tmp_path / "*.png"), "--output", out]) == 3
    frames = _frames(out)
    assert len(frames) == 3 and all(f.shape == (32, 48, 3) for f in frames)
