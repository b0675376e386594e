"""MaskFormer semantic (class scores from query masks) exported to ONNX and TorchScript equals eager."""
import pytest

from .semantic_checks import check_semantic_export

OPTS = ["MODEL.MASK_FORMER.HIDDEN_DIM", "32", "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
        "MODEL.MASK_FORMER.DEC_LAYERS", "2", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "10",
        "MODEL.SEM_SEG_HEAD.MASK_DIM", "32"]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_maskformer_semantic_export_matches_eager(fmt, tmp_path):
    check_semantic_export("configs/maskformer/toy/maskformer_R18_toy_semantic.yaml", fmt, tmp_path, OPTS, min_classes=1)
    # A random MaskFormer's queries all predict the same class (their decoder states
    # barely differ), so the label map has one class; its scores still vary per pixel
    # (checked), and the 1e-3 bound on them is the test.
