"""``x W^T + b``: the projection every Linear cell runs."""
from __future__ import annotations

from mindspore import mint

from .broadcast import broadcast_like


def linear(x, weight, bias=None):
    """Bias-free MatMul, then the bias added as a same-shape operand.

    Bit for bit the fused ``mint.nn.functional.linear`` on CPU, without its per-element index tables
    (16 bytes per output element held for the graph's life; see ``ops/broadcast.py``).
    """
    y = mint.nn.functional.linear(x, weight)
    return y if bias is None else y + broadcast_like(bias, y)


def linear_ascend(x, weight, bias=None):
    """Ascend: the fused MatMul + bias (bf16 output rounded once, as the reference's)."""
    return mint.nn.functional.linear(x, weight, bias)
