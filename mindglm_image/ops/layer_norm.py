"""LayerNorm (affine or not) and the DiT's adaLN modulation fused with it."""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, ops

from .broadcast import broadcast_like


def layer_norm(x, eps: float, weight=None, bias=None):
    """Normalise over the last axis in fp32, optional affine in fp32, cast back.

    Written with elementary ops: mint's fused layer norm has no CPU kernel in MindSpore 2.10.
    """
    h = x.astype(ms.float32)
    h = h - broadcast_like(mint.mean(h, -1, keepdim=True), h)
    h = h * broadcast_like(ops.rsqrt(mint.mean(h * h, -1, keepdim=True) + eps), h)
    if weight is not None:
        h = h * broadcast_like(weight.astype(ms.float32), h)
    if bias is not None:
        h = h + broadcast_like(bias.astype(ms.float32), h)
    return h.astype(x.dtype)


def ada_layer_norm(x, shift, scale, eps: float):
    """adaLN: LayerNorm(x) * (1 + scale) + shift, per-sample (B, D) shift/scale over the sequence of (B, S, D)."""
    h = layer_norm(x, eps)
    return h * broadcast_like(1 + scale.unsqueeze(1), h) + broadcast_like(shift.unsqueeze(1), h)


def layer_norm_ascend(x, eps: float, weight=None, bias=None):
    """Ascend ``mint.nn.functional.layer_norm`` (LayerNormV3 kernel, fp32 statistics)."""
    return mint.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def ada_layer_norm_ascend(x, shift, scale, eps: float):
    """Ascend: built-in LayerNorm then the modulation; the AscendC one-pass kernel is in kernels/ascendc/."""
    return layer_norm_ascend(x, eps) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
