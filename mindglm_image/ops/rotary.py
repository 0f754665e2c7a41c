"""Rotate-half rotary embedding, shared by the AR decoder's 3-D mrope and the DiT's 2-D rope.

The two differ only in their tables (``models/ar/rope.py``, ``models/dit/rotary.py``); applying them is
the same: the first ``cos.shape[-1]`` channels of each head rotate (partial rotary in the AR decoder),
the rest pass through. Computed in the tables' dtype (fp32 DiT tables, compute-dtype AR tables, as the
respective references) and cast back.
"""
from __future__ import annotations

from mindspore import mint, ops

from .broadcast import broadcast_like


def _rotate(x, cos, sin):
    x = x.astype(cos.dtype)
    x1, x2 = mint.chunk(x, 2, -1)
    return x * broadcast_like(cos, x) + mint.cat((-x2, x1), -1) * broadcast_like(sin, x)


def apply_rotary(x, cos, sin):
    """x (..., D) with cos/sin (..., R) broadcastable to x's leading axes, R <= D even."""
    rotary_dim = cos.shape[-1]
    if rotary_dim == x.shape[-1]:
        return _rotate(x, cos, sin).astype(x.dtype)
    rotated = _rotate(x[..., :rotary_dim], cos, sin).astype(x.dtype)
    return mint.cat((rotated, x[..., rotary_dim:]), -1)


def apply_rotary_ascend(x, cos, sin):
    """Ascend ``ops.rotary_position_embedding(x, cos, sin, mode=0)`` (RotaryPositionEmbedding kernel,
    mode 0 = rotate-half); the partial slice is rotated alone."""
    rotary_dim = cos.shape[-1]
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    if rotary_dim == x.shape[-1]:
        return ops.rotary_position_embedding(x, cos, sin, 0)
    rotated = ops.rotary_position_embedding(x[..., :rotary_dim], cos, sin, 0)
    return mint.cat((rotated, x[..., rotary_dim:]), -1)
