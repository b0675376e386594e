"""Static-shape stand-ins for two operations that ONNX cannot express as traced.

An export here is for one input size (the sample's), so every shape is a
Python int at trace time. Two things in detectron2 models stop the legacy
(TorchScript-based) ONNX exporter anyway:

- ``ImageList.from_tensors`` computes the padded size with tensor arithmetic
  when tracing (for detectron2's dynamic-shape exports), so every shape after
  it is unknown to the exporter, and operators that need static sizes (adaptive
  pooling) fail ("input size not accessible").
- ``F.adaptive_avg_pool2d`` exports only when each output size divides the
  input size (ICNet's pyramid pooling uses bins 1, 2, 3, 6 on a 1/32 map, e.g.
  32 x 64 at 1024 x 2048).

:func:`static_export_ops` replaces both for the duration of an export with
equivalents computed from Python ints: padding by constants, and adaptive
average pooling as two matrix products with PyTorch's own bin boundaries
(start = floor(i * n / b), end = ceil((i + 1) * n / b)). Outputs are the same
up to float rounding (tests/d2ext/deploy/test_static_ops.py).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.structures import ImageList

__all__ = ["adaptive_avg_pool2d_static", "image_list_static", "static_export_ops"]


def _pool_matrix(n: int, bins: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(bins, n): row i averages positions [floor(i n / bins), ceil((i + 1) n / bins))."""
    m = torch.zeros(bins, n, dtype=dtype, device=device)
    for i in range(bins):  # bins <= a few dozen: built once, at trace time
        start, end = (i * n) // bins, -(-((i + 1) * n) // bins)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool2d_static(
    x: torch.Tensor, output_size: Union[int, Sequence[int]]
) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` of (N, C, H, W) -> (N, C, h, w) as P_h @ x @ P_w^T.

    H and W are read as Python ints: the result is valid for this input size only.
    ``None`` in ``output_size`` keeps that dimension, as in PyTorch.
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    in_h, in_w = int(x.shape[-2]), int(x.shape[-1])
    out_h = in_h if output_size[0] is None else int(output_size[0])
    out_w = in_w if output_size[1] is None else int(output_size[1])
    if in_h % out_h == 0 and in_w % out_w == 0:
        # a plain average pool; its kernel is a constant, so the exporter needs no
        # input shape (which its shape inference does not always have here)
        kernel = (in_h // out_h, in_w // out_w)
        return F.avg_pool2d(x, kernel, kernel)
    ph = _pool_matrix(in_h, out_h, x.dtype, x.device)  # (h, H)
    pw = _pool_matrix(in_w, out_w, x.dtype, x.device)  # (w, W)
    return torch.matmul(torch.matmul(ph, x), pw.t())


def image_list_static(
    tensors: List[torch.Tensor],
    size_divisibility: int = 0,
    pad_value: float = 0.0,
    padding_constraints: Optional[Dict[str, int]] = None,
) -> ImageList:
    """``ImageList.from_tensors`` with the padded size and image sizes as Python ints.

    Args:
        tensors: (C, H_i, W_i) images.
        padding_constraints: detectron2 (current source) backbones' {"size_divisibility",
            "square_size"}, handled as detectron2 does.
    Returns:
        an ImageList whose tensor is (N, C, H, W), H and W the largest sizes rounded
        up to ``size_divisibility``; image_sizes [(H_i, W_i)] of ints.
    """
    sizes: List[Tuple[int, int]] = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    if padding_constraints is not None:
        square = int(padding_constraints.get("square_size", 0))
        if square > 0:
            h = w = square
        size_divisibility = padding_constraints.get("size_divisibility", size_divisibility)
    if size_divisibility > 1:
        d = int(size_divisibility)
        h, w = -(-h // d) * d, -(-w // d) * d
    batch = torch.stack(
        [F.pad(t, [0, w - s[1], 0, h - s[0]], value=pad_value) for t, s in zip(tensors, sizes)]
    )
    return ImageList(batch.contiguous(), sizes)


_ORIGINAL_ADAPTIVE_AVG_POOL2D = F.adaptive_avg_pool2d


@contextlib.contextmanager
def static_export_ops() -> Iterator[None]:
    """Within: ``ImageList.from_tensors`` and ``F.adaptive_avg_pool2d`` are the static
    versions above (for every caller); restored on exit, also on error."""
    saved_from_tensors = ImageList.__dict__["from_tensors"]
    ImageList.from_tensors = staticmethod(image_list_static)
    F.adaptive_avg_pool2d = adaptive_avg_pool2d_static
    try:
        yield
    finally:
        ImageList.from_tensors = saved_from_tensors
        F.adaptive_avg_pool2d = _ORIGINAL_ADAPTIVE_AVG_POOL2D
