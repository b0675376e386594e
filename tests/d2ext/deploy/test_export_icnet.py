"""ICNet (both variants) exported to ONNX (run on ONNX Runtime CPU) and TorchScript equals eager."""
import pytest

from .semantic_checks import check_semantic_export

CONFIGS = ["configs/icnet/toy/icnet_R18_toy.yaml", "configs/icnet/toy/icnet_R18_feature_toy.yaml"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("config", CONFIGS)
def test_icnet_export_matches_eager(config, fmt, tmp_path):
    check_semantic_export(config, fmt, tmp_path)


def test_icnet_export_where_pooling_bins_divide_the_map(tmp_path):
    # 128 x 128: the 4 x 4 res5 map, bins 1 and 2 divide it (average pools), 3 and 6 do not
    check_semantic_export(CONFIGS[0], "onnx", tmp_path, size=(128, 128))
