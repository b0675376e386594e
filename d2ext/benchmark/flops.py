"""FLOPs (fvcore's count, one multiply-add = one flop) and parameter counts."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Union

import torch
from torch import nn

# Element-wise and reduction operators not counted, as in detectron2.utils.analysis
# (which cannot be imported on detectron2 0.6 with today's torch: detectron2.export
# imports caffe2).
_IGNORED_OPS = (
    "aten::add", "aten::add_", "aten::argmax", "aten::argsort", "aten::batch_norm",
    "aten::constant_pad_nd", "aten::div", "aten::div_", "aten::exp", "aten::log2",
    "aten::max_pool2d", "aten::meshgrid", "aten::mul", "aten::mul_", "aten::neg",
    "aten::nonzero_numpy", "aten::reciprocal", "aten::rsub", "aten::sigmoid",
    "aten::sigmoid_", "aten::softmax", "aten::sort", "aten::sqrt", "aten::sub",
    "torchvision::nms",
)


def _flatten_tensors(obj: Any, out: List[torch.Tensor]) -> List[torch.Tensor]:
    """Every tensor inside ``obj`` (lists, tuples, dicts, Instances, Boxes-like), in order."""
    from detectron2.structures import Instances

    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _flatten_tensors(x, out)
    elif isinstance(obj, dict):
        for x in obj.values():
            _flatten_tensors(x, out)
    elif isinstance(obj, Instances):
        for x in obj.get_fields().values():
            _flatten_tensors(x, out)
    elif isinstance(getattr(obj, "tensor", None), torch.Tensor):  # Boxes, BitMasks, ...
        out.append(obj.tensor)
    return out


class _TraceAdapter(nn.Module):
    """Presents ``fn(*inputs)`` to the JIT tracer as tensors in, tensors out.

    The tensors inside ``inputs`` are the traced arguments; everything else in
    the inputs (image sizes, file names) is fixed, and non-tensor outputs are
    dropped. Valid only for the one trace with these very inputs, which is all
    FLOP counting needs.
    """

    def __init__(self, fn: Callable, inputs: tuple, modules: Sequence[nn.Module] = ()):
        super().__init__()
        # The tracer only accepts parameters that belong to the traced module, so
        # the modules a plain function calls are registered too. fvcore then names
        # submodules "module.<child>..." (children of a module; "module.<i>" for
        # the i-th of ``modules``).
        if isinstance(fn, nn.Module):
            self.module = fn
            self._fn = None
        else:
            self.module = nn.ModuleList(modules)
            self._fn = fn
        self.inputs = inputs
        self.flat_inputs = tuple(_flatten_tensors(inputs, []))

    def forward(self, *flat_inputs: torch.Tensor):
        if len(flat_inputs) != len(self.flat_inputs) or any(
            a is not b for a, b in zip(flat_inputs, self.flat_inputs)
        ):
            raise ValueError("_TraceAdapter must be traced with its own flat_inputs")
        fn = self.module if self._fn is None else self._fn
        return tuple(_flatten_tensors(fn(*self.inputs), []))


def count_flops(
    model_or_fn: Union[nn.Module, Callable],
    inputs: Any,
    *,
    modules: Sequence[nn.Module] = (),
) -> Dict[str, Any]:
    """FLOPs of one call ``model_or_fn(*inputs)``, by tracing it once with fvcore.

    Args:
        model_or_fn: a module or any callable; a detectron2 meta-architecture
            taking ``list[dict]`` works (put it in eval mode for inference FLOPs).
        inputs: a tuple of positional arguments, or a single argument (e.g. the
            ``list[dict]`` batch of a detectron2 model). Tensors may sit inside
            lists, dicts and detectron2 structures.
        modules: for a plain function, the modules it calls whose parameters
            require grad (the JIT tracer rejects such parameters unless it
            knows their module). A bound method's module is added by itself.

    Returns:
        ``gflops`` (total / 1e9), ``by_operator`` (op -> GFLOPs), ``by_module``
        (child module name -> GFLOPs, for a module; index of ``modules`` for a
        function), ``unsupported_ops`` (op -> number of calls skipped as zero).

    The count depends on the input: e.g. a detector's heads cost in proportion to
    its number of detections.
    """
    from fvcore.nn import FlopCountAnalysis

    if not isinstance(inputs, tuple):
        inputs = (inputs,)
    modules = list(modules)
    owner = getattr(model_or_fn, "__self__", None)
    if isinstance(owner, nn.Module) and not any(owner is m for m in modules):
        modules.append(owner)
    adapter = _TraceAdapter(model_or_fn, inputs, modules)
    with torch.no_grad():
        analysis = FlopCountAnalysis(adapter, adapter.flat_inputs)
        analysis.set_op_handle(**{op: None for op in _IGNORED_OPS})
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        try:
            total = analysis.total()
        except RuntimeError as e:
            if "requires grad as a constant" not in str(e):
                raise
            raise RuntimeError(
                "count_flops: the function uses a parameter of a module the tracer does "
                "not know; pass that module in modules=[...]"
            ) from e
        by_operator = analysis.by_operator()
        by_module = analysis.by_module()
        unsupported = analysis.unsupported_ops()
    prefix = "module."
    children = {
        name[len(prefix):]: v / 1e9
        for name, v in by_module.items()
        if name.startswith(prefix) and "." not in name[len(prefix):]
    }
    return {
        "gflops": total / 1e9,
        "by_operator": {k: v / 1e9 for k, v in sorted(by_operator.items())},
        "by_module": children,
        "unsupported_ops": dict(sorted(unsupported.items())),
    }


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Number of parameters (shared parameters counted once), and of trainable ones."""
    params = list(model.parameters())  # .parameters() already de-duplicates shared ones
    return {
        "params": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
    }
