"""Gated MLP activation (SwiGLU): silu(gate) * up on a fused [gate | up] projection."""
from __future__ import annotations

from mindspore import mint, ops


def swiglu(gate_up):
    """(..., 2F) laid out [gate | up] -> (..., F)."""
    gate, up = mint.chunk(gate_up, 2, -1)
    return up * mint.nn.functional.silu(gate)


def swiglu_ascend(gate_up):
    """Ascend ``ops.swiglu(x, dim=-1)``: Swish of the first half times the second half."""
    return ops.swiglu(gate_up, -1)
