"""tools/benchmark_pointrend.py at tiny sizes: both modes run, time and report what they say."""
import json
import os

import torch

from .conftest import REPO_ROOT, load_tool

tool = load_tool("benchmark_pointrend")

CONFIG = os.path.join(REPO_ROOT, "configs", "pointrend", "coco", "pointrend_rcnn_R_50_FPN_1x_coco.yaml")
# Narrow widths, 2 subdivision steps (7 -> 28): seconds on 2 shared cores.
TINY = [
    "MODEL.WEIGHTS", "",
    "MODEL.FPN.OUT_CHANNELS", "16",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
    "MODEL.ROI_MASK_HEAD.FC_DIM", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "32",
    "MODEL.POINT_HEAD.FC_DIM", "16",
    "MODEL.POINT_HEAD.SUBDIVISION_STEPS", "2",
]


def test_variants_mode_is_the_default(tmp_path, capsys):
    out = tmp_path / "variants.json"
    result = tool.main(["--boxes", "2", "--image-size", "64", "96", "--warmup", "0", "--iters", "1",
                        "--config-file", CONFIG, "--output", str(out), *TINY])
    assert result["mode"] == "variants"
    assert [r["variant"] for r in result["results"]] == ["subdivision", "dense_point_head", "dense_conv_head"]
    assert all(r["output_shape"][-2:] == (28, 28) for r in result["results"])
    assert all(r["latency_ms_median"] > 0 and r["gflops_total"] > 0 for r in result["results"])
    assert json.loads(out.read_text())["mode"] == "variants"
    assert "| subdivision |" in capsys.readouterr().out


def test_mask_rcnn_mode_times_both_heads_on_the_same_boxes(tmp_path, capsys):
    out = tmp_path / "mask_rcnn.json"
    result = tool.main(["--mode", "mask_rcnn", "--boxes", "3", "--image-size", "64", "96",
                        "--warmup", "0", "--iters", "2", "--threads", "1",
                        "--config-file", CONFIG, "--output", str(out), *TINY])
    assert result["mode"] == "mask_rcnn" and result["boxes"] == 3 and result["image_size"] == [64, 96]
    heads = {r["head"]: r for r in result["results"]}
    assert heads["pointrend"]["output_shape"] == (3, 1, 28, 28)  # 7 x 2^2
    assert heads["mask_rcnn"]["output_shape"] == (3, 1, 28, 28)  # Mask R-CNN's 28 x 28
    assert all(len(r["latency_ms_all"]) == 2 and r["latency_ms_median"] > 0 for r in heads.values())
    ratio = heads["pointrend"]["latency_ms_median"] / heads["mask_rcnn"]["latency_ms_median"]
    assert abs(result["ratio_pointrend_to_mask_rcnn"] - ratio) < 1e-9
    assert json.loads(out.read_text())["ratio_pointrend_to_mask_rcnn"] == result["ratio_pointrend_to_mask_rcnn"]
    printed = capsys.readouterr().out
    assert "PointRend / Mask R-CNN mask head:" in printed and "| mask_rcnn |" in printed


def test_mask_rcnn_mode_inputs_are_seeded_and_both_heads_see_them():
    cfg = tool.load_cfg(CONFIG, TINY)
    mcfg = tool.mask_rcnn_cfg(tool.MASK_RCNN_CONFIG, cfg.MODEL.ROI_HEADS.NUM_CLASSES, "cpu")
    a = tool.MaskHeadsSetup(cfg, mcfg, 4, (64, 96), "cpu")
    b = tool.MaskHeadsSetup(cfg, mcfg, 4, (64, 96), "cpu")
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.classes, b.classes)
    assert sorted(a.features) == ["p2", "p3", "p4", "p5"] and a.features["p2"].shape[-2:] == (16, 24)
    assert type(a.mask_rcnn.mask_head).__name__ == "MaskRCNNConvUpsampleHead"
    assert a.mask_rcnn.mask_pooler is not None  # its ROIAlign pooling is timed with it
    assert type(a.pointrend.mask_head).__name__ == "PointRendMaskHead"
    with torch.no_grad():
        assert torch.equal(a.pointrend_head(), b.pointrend_head())
