"""``x W^T + b``: the projection every Linear cell runs."""
from __future__ import annotations

from mindspore import mint, ops


def linear(x, weight, bias=None):
    """Bias-free MatMul, then the bias by ``BiasAdd`` over the rows of a 2-D view.

    Bit for bit the fused ``mint.nn.functional.linear`` on CPU, without the per-element index tables of a
    broadcasting Add (16 bytes per output element held for the graph's life; see ``ops/broadcast.py``) and without
    materialising the broadcast bias (``BroadcastTo`` + Add, the form before).
    """
    y = mint.nn.functional.linear(x, weight)
    if bias is None:
        return y
    return ops.bias_add(y.reshape(-1, y.shape[-1]), bias).reshape(y.shape)


def linear_ascend(x, weight, bias=None):
    """Ascend: the fused MatMul + bias (bf16 output rounded once, as the reference's)."""
    return mint.nn.functional.linear(x, weight, bias)
