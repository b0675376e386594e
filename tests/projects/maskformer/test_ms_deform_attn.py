"""Pure-PyTorch multi-scale deformable attention: against a hand-written loop,
uniform attention at init, gradients to the offsets."""
from __future__ import annotations

import math

import torch

from d2ext_projects.maskformer.ms_deform_attn import MSDeformAttn, ms_deform_attn

torch.set_num_threads(1)


def _bilinear(img, x, y):
    """img (D, H, W); (x, y) normalised with align_corners=False; zeros outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5  # pixel coordinates, centres at integers
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=img.dtype)
    for yi in (y0, y0 + 1):
        for xi in (x0, x0 + 1):
            if 0 <= xi < w and 0 <= yi < h:
                wgt = (1 - abs(px - xi)) * (1 - abs(py - yi))
                out += wgt * img[:, yi, xi]
    return out


def test_matches_loop():
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[3, 4], [2, 5]])
    starts = torch.tensor([0, 12])
    n, lq, m, d, lv, p = 2, 3, 2, 3, 2, 2
    value = torch.randn(n, 22, m, d, generator=g, dtype=torch.float64)
    locs = torch.rand(n, lq, m, lv, p, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3
    # exactly on pixel centres of level 0 (x=(i+0.5)/W, y=(j+0.5)/H)
    locs[0, 0, 0, 0, 0] = torch.tensor([1.5 / 4, 0.5 / 3], dtype=torch.float64)
    locs[1, 2, 1, 0, 1] = torch.tensor([3.5 / 4, 2.5 / 3], dtype=torch.float64)
    assert (locs < 0).any() and (locs > 1).any()
    attn = torch.rand(n, lq, m, lv, p, generator=g, dtype=torch.float64)
    out = ms_deform_attn(value, shapes, starts, locs, attn)
    assert out.shape == (n, lq, m * d)

    expected = torch.zeros(n, lq, m, d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for hd in range(m):
                for lvl in range(lv):
                    h, w = shapes[lvl].tolist()
                    img = value[b, starts[lvl]:starts[lvl] + h * w, hd].T.reshape(d, h, w)
                    for pt in range(p):
                        x, y = locs[b, q, hd, lvl, pt].tolist()
                        expected[b, q, hd] += attn[b, q, hd, lvl, pt] * _bilinear(img, x, y)
    torch.testing.assert_close(out, expected.view(n, lq, m * d), atol=1e-10, rtol=0)
    # a pixel-centre sample reads the pixel itself
    img0 = value[0, 0:12, 0].T.reshape(d, 3, 4)
    torch.testing.assert_close(_bilinear(img0, 1.5 / 4, 0.5 / 3), img0[:, 0, 1], atol=1e-12, rtol=0)


def _inputs(c=8, n=2, lq=5):
    shapes = torch.tensor([[4, 6], [2, 3]])
    starts = torch.tensor([0, 24])
    x = torch.randn(n, 30, c)
    q = torch.randn(n, lq, c)
    ref = torch.rand(n, lq, 2, 2)
    return q, ref, x, shapes, starts


def test_shape_and_uniform_init():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=3)
    q, ref, x, shapes, starts = _inputs()
    out = attn(q, ref, x, shapes, starts)
    assert out.shape == (2, 5, 8)
    w = attn.attention_weights(q).view(2, 5, 2, 6).softmax(-1)
    torch.testing.assert_close(w, torch.full_like(w, 1 / 6))
    # init offsets: head 0 points along +x, head 1 along -x (M=2), point p at p+1 pixels
    b = attn.sampling_offsets.bias.view(2, 2, 3, 2)
    torch.testing.assert_close(b[0, 1, :, 0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(b[1, 0, :, 0], torch.tensor([-1.0, -2.0, -3.0]))
    # uniform weights: output equals the mean of the samples through the projections
    value = attn.value_proj(x).view(2, 30, 2, 4)
    offs = attn.sampling_offsets(q).view(2, 5, 2, 2, 3, 2)
    locs = ref[:, :, None, :, None] + offs / shapes.flip(-1)[None, None, None, :, None]
    uniform = torch.full((2, 5, 2, 2, 3), 1 / 6)
    torch.testing.assert_close(out, attn.output_proj(ms_deform_attn(value, shapes, starts, locs, uniform)))


def test_grad_reaches_offsets():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2)
    q, ref, x, shapes, starts = _inputs()
    attn(q, ref, x, shapes, starts).square().sum().backward()
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert attn.sampling_offsets.bias.grad.abs().sum() > 0
