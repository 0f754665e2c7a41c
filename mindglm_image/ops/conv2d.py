"""2-D convolution (the VAE's and the vision patch embedding's), torch's weight layout (out, in, kh, kw).

The composite is im2col: ``unfold`` gathers every kh x kw window into a column and one MatMul applies the
filters. It is the definition everywhere and the CPU path: MindSpore 2.10's CPU Conv2D kernel is far
slower than its CPU MatMul (``scripts/bench_kernels.py --skip-e2e``: a 32-channel 3x3 conv at 256 x 256,
2217 ms built-in vs 31.9 ms im2col vs 13.5 ms torch, one run on the 2-core machine); ``tests/test_ops.py``
checks the im2col form against ``ops.conv2d`` forward and backward. Its columns cost kh*kw times the input's memory for the one conv being
computed. On Ascend the built-in Conv2D (Cube unit) is the fused path.
"""
from __future__ import annotations

from mindspore import Tensor, mint, ops

from .broadcast import broadcast_like


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """(B, C, H, W) -> (B, O, H', W'): im2col columns (B, C*kh*kw, H'*W') times the (O, C*kh*kw) filters."""
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h = (height + 2 * padding - kh) // stride + 1
    out_w = (width + 2 * padding - kw) // stride + 1
    columns = ops.unfold(x, (kh, kw), 1, padding, stride)
    y = mint.matmul(weight.reshape(out_channels, channels * kh * kw), columns).reshape(batch, out_channels, out_h, out_w)
    return y if bias is None else y + broadcast_like(bias.reshape(1, out_channels, 1, 1), y)


def conv2d_ascend(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """Ascend: the built-in Conv2D with explicit zero padding."""
    return ops.conv2d(x, weight, bias, stride, "pad", padding)
