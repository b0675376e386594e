"""Semantic FPN and PointRend semantic exported to ONNX and TorchScript equal eager."""
import pytest

from .semantic_checks import check_semantic_export

CONFIGS = [
    "configs/baselines/toy/semantic_fpn_R18_toy.yaml",
    # 2 subdivision steps from 1/4: point sampling (topk, grid_sample, scatter) in the graph
    "configs/pointrend/toy/pointrend_semantic_R18_FPN_toy.yaml",
]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("config", CONFIGS)
def test_semantic_fpn_export_matches_eager(config, fmt, tmp_path):
    opts = ["MODEL.POINT_HEAD.FC_DIM", "32", "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS", "256"] if "pointrend" in config else []
    check_semantic_export(config, fmt, tmp_path, opts)
