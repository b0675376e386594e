"""The static-shape stand-ins equal what they replace, and are restored after the export."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import ImageList

from d2ext.deploy.static_ops import adaptive_avg_pool2d_static, image_list_static, static_export_ops


@pytest.mark.parametrize("size,bins", [((32, 64), 6), ((32, 64), 3), ((7, 5), (3, 2)), ((2, 3), 6),
                                       ((12, 12), 4), ((9, 10), (None, 4))])
def test_adaptive_pool_equals_torch(size, bins):
    x = torch.randn(2, 3, *size)
    torch.testing.assert_close(adaptive_avg_pool2d_static(x, bins), F.adaptive_avg_pool2d(x, bins))


def test_adaptive_pool_exports_to_onnx_on_non_divisible_sizes(tmp_path):
    # torch's own adaptive pooling refuses to export here (6 does not divide 32)
    class Pool(torch.nn.Module):
        def forward(self, x):
            return F.adaptive_avg_pool2d(x, 6)

    x = torch.randn(1, 4, 32, 64)
    with pytest.raises(Exception, match="adaptive_avg_pool2d"):
        torch.onnx.export(Pool(), (x,), str(tmp_path / "a.onnx"), dynamo=False, opset_version=17)
    with static_export_ops():
        torch.onnx.export(Pool(), (x,), str(tmp_path / "b.onnx"), dynamo=False, opset_version=17)
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "b.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), F.adaptive_avg_pool2d(x, 6), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("divisibility", [0, 32])
def test_image_list_equals_detectron2(divisibility):
    images = [torch.randn(3, 50, 70), torch.randn(3, 64, 33)]
    ours = image_list_static(images, divisibility, pad_value=1.5)
    theirs = ImageList.from_tensors(images, divisibility, pad_value=1.5)
    torch.testing.assert_close(ours.tensor, theirs.tensor)
    assert ours.image_sizes == [tuple(s) for s in theirs.image_sizes] == [(50, 70), (64, 33)]
    assert all(isinstance(v, int) for s in ours.image_sizes for v in s)


def test_image_list_padding_constraints_as_detectron2_current_source():
    images = [torch.randn(3, 50, 70)]
    square = image_list_static(images, 0, padding_constraints={"square_size": 96, "size_divisibility": 32})
    assert square.tensor.shape == (1, 3, 96, 96) and square.image_sizes == [(50, 70)]
    divisible = image_list_static(images, 0, padding_constraints={"size_divisibility": 32})
    assert divisible.tensor.shape == (1, 3, 64, 96)


def test_context_restores_the_originals_also_on_error():
    before_pool, before_from = F.adaptive_avg_pool2d, ImageList.__dict__["from_tensors"]
    with pytest.raises(RuntimeError, match="inside"):
        with static_export_ops():
            assert F.adaptive_avg_pool2d is adaptive_avg_pool2d_static
            assert ImageList.from_tensors is image_list_static
            raise RuntimeError("inside")
    assert F.adaptive_avg_pool2d is before_pool
    assert ImageList.__dict__["from_tensors"] is before_from
