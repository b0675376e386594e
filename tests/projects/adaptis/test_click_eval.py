"""Click evaluation: click placement and IoU summaries by hand; both modes run
end to end on the tiny toy dataset."""
import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer

from d2ext_projects.adaptis.click_eval import click_points, iou_summary, run
from tests.projects.adaptis.conftest import TOY_STAGE1, build, tiny_cfg


def test_center_click_is_farthest_from_the_boundary():
    mask = np.zeros((9, 12), dtype=bool)
    mask[1:8, 1:4] = True  # a 7 x 3 bar: rows 2-6 of its middle column tie (distance 2): the first
    mask[2:9, 6:12] = True  # a 7 x 6 block: its centre pixels are farthest overall
    (x, y), = click_points([mask[:, :5]], "center", np.random.default_rng(0))
    assert (x, y) == (2.5, 2.5)
    (x, y), = click_points([mask], "center", np.random.default_rng(0))
    assert 7 < x < 11 and 4 < y < 7 and mask[int(y), int(x)]


def test_random_clicks_are_inside_and_seeded():
    rng = np.random.default_rng(3)
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:7, 3:15] = True
    pts = click_points([mask] * 50, "random", rng)
    assert all(mask[int(y), int(x)] for x, y in pts)
    again = click_points([mask] * 50, "random", np.random.default_rng(3))
    np.testing.assert_array_equal(pts, again)


def test_iou_summary_by_hand():
    out = iou_summary([0.9, 0.4, 0.6, 0.86], [0, 0, 1, 1], ["a", "b"])
    assert out["all"] == pytest.approx({"mean_iou": 69.0, "median_iou": 73.0, "iou>=0.5": 75.0, "iou>=0.85": 50.0, "clicks": 4})
    assert out["a"]["mean_iou"] == pytest.approx(65.0) and out["b"]["iou>=0.85"] == pytest.approx(50.0)


def test_both_modes_run_on_tiny_toy(tiny_toy, tmp_path):
    model = build()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    cfg = tiny_cfg(TOY_STAGE1, ["MODEL.WEIGHTS", str(tmp_path / "model.pth"), "OUTPUT_DIR", str(tmp_path)])
    clicks = run(cfg, "clicks", "random", 0)
    assert clicks["all"]["clicks"] == 15  # the 15 things of the 3 val images
    assert 0 <= clicks["all"]["mean_iou"] <= 100
    oracle = run(cfg, "oracle", "center", 0)
    assert {"panoptic_seg", "sem_seg"} <= set(oracle)
