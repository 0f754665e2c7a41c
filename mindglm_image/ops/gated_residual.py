"""Gated residual of the DiT blocks (adaLN-zero): ``x + y * gate`` with one gate row per sample."""
from __future__ import annotations

from mindspore import mint

from .broadcast import broadcast_like


def gated_residual(x, y, gate):
    """``x``, ``y`` (B, S, D), ``gate`` (B, D) -> x + y * gate (the gate broadcast over the S tokens)."""
    return x + y * broadcast_like(gate.unsqueeze(1), y)


def gated_residual_ascend(x, y, gate):
    """Ascend ``mint.addcmul``: x + y * gate in one kernel, broadcasting the (B, 1, D) gate natively."""
    return mint.addcmul(x, y, gate.unsqueeze(1))
