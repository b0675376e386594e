"""d2ext.compat.tracing_adapter: detectron2's TracingAdapter without caffe2 (0.6's
detectron2.export imports it), and the same class on a detectron2 where it imports."""
import torch

from d2ext.compat import tracing_adapter


def test_tracing_adapter_flattens_dict_inputs_and_outputs():
    adapter_cls = tracing_adapter()
    assert adapter_cls.__name__ == "TracingAdapter" and tracing_adapter() is adapter_cls

    class Model(torch.nn.Module):
        def forward(self, inputs):
            return [{"double": x["image"] * 2} for x in inputs]

    image = torch.arange(6.0).reshape(1, 2, 3)
    adapter = adapter_cls(Model(), [{"image": image}])
    (out,) = adapter(*adapter.flattened_inputs)
    torch.testing.assert_close(out, image * 2)
    traced = torch.jit.trace(adapter, adapter.flattened_inputs)
    torch.testing.assert_close(traced(image + 1)[0], (image + 1) * 2)
