"""RMSNorm and the residual add fused with it (AR decoder, T5)."""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, ops

from .broadcast import broadcast_like


def rms_norm(x, weight, eps: float):
    """x / rms(x) in fp32, cast back to the input dtype before the weight multiply (as the reference)."""
    dtype = x.dtype
    h = x.astype(ms.float32)
    h = h * broadcast_like(ops.rsqrt(mint.mean(h * h, -1, keepdim=True) + eps), h)
    h = h.astype(dtype)
    return broadcast_like(weight, h) * h


def add_rms_norm(x, residual, weight, eps: float):
    """(rms_norm(x + residual), x + residual): the post-attention residual add and the next norm."""
    total = x + residual
    return rms_norm(total, weight, eps), total


def rms_norm_ascend(x, weight, eps: float):
    """Ascend ``ops.rms_norm`` (RmsNorm kernel; returns (y, rstd), y taken)."""
    return ops.rms_norm(x, weight, eps)[0]


def add_rms_norm_ascend(x, residual, weight, eps: float):
    """Ascend ``ops.add_rms_norm`` (AddRmsNorm kernel; returns (y, rstd, x1 + x2))."""
    y, _, total = ops.add_rms_norm(x, residual, weight, eps)
    return y, total
