"""One check, used by every semantic export test: export on one image, run on another."""

from d2ext.deploy import export_model, load_exported
from d2ext.deploy.check import compare_semantic
from d2ext.layers import fold_batch_norms

from .conftest import build_tiny, eager_sem_seg, onnx_op_types, random_image

H, W = 64, 96


def check_semantic_export(config: str, fmt: str, tmp_path, opts=(), prepare=None, min_classes: int = 2,
                          size=(H, W)) -> dict:
    """Exports ``config``'s tiny model (batch norms folded) traced on one random image,
    runs the export on a second one and compares with the unfolded eager model.
    ``prepare(model)`` may change the random weights first; the eager label map must
    have ``min_classes`` classes (else argmax agreement says little)."""
    model = build_tiny(config, opts)
    if prepare is not None:
        prepare(model)
    h, w = size
    test_image = random_image(h, w, seed=2)
    reference = eager_sem_seg(model, test_image)  # before folding: folding is under test too
    assert fold_batch_norms(model) > 0
    meta = export_model(model, random_image(h, w, seed=1), str(tmp_path), fmt=fmt, task="sem_seg")
    assert meta["input_shape"] == [1, 3, h, w] and meta["output_names"] == ["sem_seg"]
    exported = load_exported(str(tmp_path), threads=1)
    out = exported(test_image[None])["sem_seg"]
    result = compare_semantic(reference, out)
    assert result["max_abs_diff"] < 1e-3, result
    assert result["argmax_agreement"] >= 0.999, result
    assert reference.argmax(1).unique().numel() >= min_classes
    assert float(reference.std(dim=(2, 3)).min()) > 1e-3  # outputs vary over the image
    if fmt == "onnx":
        ops = onnx_op_types(str(tmp_path / "model.onnx"))
        assert "BatchNormalization" not in ops, ops
        assert exported.backend == "onnxruntime" and "CPUExecutionProvider" in exported.providers
    return result
