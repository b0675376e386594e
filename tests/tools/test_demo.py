"""tools/demo.py: one overlay per image, of the image's size, for instance and semantic models."""
import os
import runpy
import subprocess
import sys

import cv2
import numpy as np
import pytest

from .conftest import REPO_ROOT, load_tool

demo = load_tool("demo")

# (height, width) of the test images: neither square nor the config's test size.
SIZES = {"a.png": (70, 90), "b.jpg": (50, 64), "c.png": (96, 40)}


@pytest.fixture
def image_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, (h, w) in SIZES.items():
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def _args(config_file, inputs, output, *opts, threshold="0.0", extra=()):
    argv = ["--config-file", config_file, "--input", *inputs, "--output", str(output),
            "--confidence-threshold", threshold, *extra, *opts]
    return demo.get_parser().parse_args(argv)


def _check_overlays(written, output, names_and_sizes):
    assert sorted(os.path.basename(p) for p in written) == sorted(names_and_sizes)
    for name, (h, w) in names_and_sizes.items():
        img = cv2.imread(str(output / name))
        assert img is not None, name
        assert img.shape == (h, w, 3), name


@pytest.mark.parametrize("kind", ["instance", "semantic"])
def test_demo_writes_one_overlay_per_image(kind, tiny_model_dir, image_dir, tmp_path):
    config_file, weights = tiny_model_dir[kind]
    out = tmp_path / "out"
    written = demo.main(
        _args(config_file, [str(image_dir)], out, "MODEL.WEIGHTS", weights)
    )
    expected = {os.path.splitext(n)[0] + ".png": s for n, s in SIZES.items()}
    _check_overlays(written, out, expected)


def test_overlay_differs_from_input(tiny_model_dir, image_dir, tmp_path):
    # Semantic predictions cover every pixel, so the overlay must change the image.
    config_file, weights = tiny_model_dir["semantic"]
    out = tmp_path / "out"
    demo.main(_args(config_file, [str(image_dir / "a.png")], out, "MODEL.WEIGHTS", weights))
    original = cv2.imread(str(image_dir / "a.png")).astype(int)
    overlay = cv2.imread(str(out / "a.png")).astype(int)
    assert np.abs(original - overlay).mean() > 5


def test_glob_file_mix_dedup_and_max_images(tiny_model_dir, image_dir, tmp_path):
    config_file, weights = tiny_model_dir["semantic"]
    out = tmp_path / "out"
    inputs = [str(image_dir / "*.png"), str(image_dir / "a.png"), str(image_dir / "b.jpg")]
    assert [os.path.basename(p) for p in demo.expand_inputs(inputs)] == ["a.png", "c.png", "b.jpg"]
    written = demo.main(
        _args(config_file, inputs, out, "MODEL.WEIGHTS", weights, extra=["--max-images", "2"])
    )
    _check_overlays(written, out, {"a.png": SIZES["a.png"], "c.png": SIZES["c.png"]})


def test_same_stem_from_two_folders_gets_distinct_names():
    assert demo.output_names(["x/img.png", "y/img.jpg", "z/other.png"]) == [
        "img.png", "img_1.png", "other.png"
    ]


def test_input_matching_nothing_is_a_clear_error(tiny_model_dir, image_dir, tmp_path):
    config_file, weights = tiny_model_dir["semantic"]
    missing = str(tmp_path / "nowhere" / "*.png")
    args = _args(config_file, [str(image_dir), missing], tmp_path / "out", "MODEL.WEIGHTS", weights)
    with pytest.raises(demo.UsageError, match="matched no image file.*nowhere"):
        demo.main(args)
    assert not (tmp_path / "out").exists()


def test_missing_weights_is_a_clear_error(tiny_model_dir, image_dir, tmp_path):
    config_file, _ = tiny_model_dir["semantic"]
    with pytest.raises(demo.UsageError, match="MODEL.WEIGHTS is empty"):
        demo.main(_args(config_file, [str(image_dir)], tmp_path / "out"))
    with pytest.raises(demo.UsageError, match="no such file"):
        demo.main(_args(config_file, [str(image_dir)], tmp_path / "out",
                        "MODEL.WEIGHTS", str(tmp_path / "missing.pth")))


def test_cli_bad_glob_exits_with_message(tiny_model_dir, tmp_path, monkeypatch, capsys):
    config_file, weights = tiny_model_dir["semantic"]
    monkeypatch.setattr(sys, "argv", [
        "tools/demo.py", "--config-file", config_file, "--input", str(tmp_path / "nope*.png"),
        "--output", str(tmp_path / "out"), "MODEL.WEIGHTS", weights,
    ])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(os.path.join(REPO_ROOT, "tools", "demo.py"), run_name="__main__")
    assert exit_info.value.code == 2
    assert "error: --input matched no image file" in capsys.readouterr().err


def test_cli_runs_from_repo_root(tiny_model_dir, image_dir, tmp_path):
    """`python tools/demo.py ...` from the repository root, in a fresh interpreter."""
    config_file, weights = tiny_model_dir["semantic"]
    out = tmp_path / "out"
    cmd = [sys.executable, "tools/demo.py", "--config-file", config_file,
           "--input", str(image_dir / "a.png"), str(image_dir / "c.png"),
           "--output", str(out), "MODEL.WEIGHTS", weights]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[2/2]" in proc.stdout + proc.stderr
    _check_overlays([str(out / "a.png"), str(out / "c.png")], out,
                    {"a.png": SIZES["a.png"], "c.png": SIZES["c.png"]})


def test_unreadable_input_is_skipped_with_a_warning_and_reported(tiny_model_dir, image_dir, tmp_path, caplog):
    config_file, weights = tiny_model_dir["semantic"]
    good = (image_dir / "a.png").read_bytes()
    (image_dir / "broken.png").write_bytes(good[: len(good) // 3])  # truncated PNG
    (image_dir / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(demo.SkippedInputsError) as info:
        demo.main(_args(config_file, [str(image_dir)], out, "MODEL.WEIGHTS", weights))
    assert sorted(os.path.basename(p) for p in info.value.skipped) == ["broken.png", "empty.jpg"]
    expected = {os.path.splitext(n)[0] + ".png": s for n, s in SIZES.items()}
    _check_overlays(info.value.written, out, expected)  # the others were all processed
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "broken.png" in warned and "empty.jpg" in warned


def test_cli_exits_non_zero_after_skipping(tiny_model_dir, image_dir, tmp_path):
    config_file, weights = tiny_model_dir["semantic"]
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    cmd = [sys.executable, "tools/demo.py", "--config-file", config_file, "--input", str(image_dir),
           "--output", str(tmp_path / "out"), "MODEL.WEIGHTS", weights]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "skipped 1 unreadable input(s)" in proc.stderr and "broken.png" in proc.stderr
    assert len(os.listdir(tmp_path / "out")) == len(SIZES)


def test_points_to_a_model_without_prompts_is_a_usage_error(tiny_model_dir, image_dir, tmp_path):
    config_file, weights = tiny_model_dir["semantic"]
    args = _args(config_file, [str(image_dir)], tmp_path / "out", "MODEL.WEIGHTS", weights,
                 extra=["--points", "3,4"])
    with pytest.raises(demo.UsageError, match="accepts no 'points' prompts"):
        demo.main(args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["3", "3,4,5", "a,b", "nan,1", ""])
def test_bad_points_are_named(text):
    with pytest.raises(demo.UsageError, match="--points"):
        demo.parse_points(text)


@pytest.fixture
def click_model(tmp_path, example_method):
    """The tests' example method (it accepts points): a config file and its weights."""
    import torch

    example = example_method
    from d2ext.engine import Trainer, load_cfg

    config_file = tmp_path / "click.yaml"
    config_file.write_text(
        f"MODEL:\n  META_ARCHITECTURE: {example.META_ARCH}\n  DEVICE: cpu\n"
        "  EXAMPLE:\n    RADIUS: 6.0\nINPUT:\n  MIN_SIZE_TEST: 32\n  FORMAT: RGB\n"
        "DATASETS:\n  TEST: ('toy_sem_seg_val',)\n"
    )
    weights = tmp_path / "click.pth"
    torch.save({"model": Trainer.build_model(load_cfg(str(config_file))).state_dict()}, weights)
    return str(config_file), str(weights)


def test_clicks_reach_the_model_and_are_drawn(click_model, image_dir, tmp_path):
    config_file, weights = click_model
    points_json = tmp_path / "clicks.json"
    points_json.write_text('{"a.png": [[20, 30], [60.5, 10]], "b.jpg": [[5, 5]]}')
    out = tmp_path / "out"
    written = demo.main(_args(config_file, [str(image_dir)], out, "MODEL.WEIGHTS", weights,
                              extra=["--points-json", str(points_json)]))
    _check_overlays(written, out, {os.path.splitext(n)[0] + ".png": s for n, s in SIZES.items()})
    plain = tmp_path / "plain"
    demo.main(_args(config_file, [str(image_dir)], plain, "MODEL.WEIGHTS", weights))
    a_clicked, a_plain = (cv2.imread(str(d / "a.png")).astype(int) for d in (out, plain))
    c_clicked, c_plain = (cv2.imread(str(d / "c.png")).astype(int) for d in (out, plain))
    # a.png's clicks changed the overlay around (x=20, y=30); c.png had no clicks.
    assert np.abs(a_clicked[24:37, 14:27] - a_plain[24:37, 14:27]).mean() > 20
    assert np.array_equal(c_clicked, c_plain)


@pytest.mark.parametrize("content, match", [("[1, 2]", "expected an object"), ('{"a.png": [[1]]}', "'a.png'"),
                                             ("{", "not valid json")])
def test_bad_points_json_is_named(tmp_path, content, match):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(demo.UsageError, match=match):
        demo.load_points_json(str(path))
