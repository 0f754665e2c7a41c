"""2-D convolution (the VAE's and the vision patch embedding's), torch's weight layout (out, in, kh, kw).

One form everywhere: MindSpore's built-in Conv2D with explicit zero padding (oneDNN on CPU, the Cube unit
on Ascend). An im2col composite (``unfold`` + one MatMul) was the CPU path while an early benchmark run
showed the built-in 69x slower; re-measured (``scripts/bench_kernels.py --skip-e2e`` at commit 95d80e0, the
last with im2col; README, Fused operators) the built-in is the faster one, so im2col is gone.
"""
from __future__ import annotations

from mindspore import Tensor, ops


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """(B, C, H, W) -> (B, O, H', W'), zero padding on every side."""
    return ops.conv2d(x, weight, bias, stride, "pad", padding)
