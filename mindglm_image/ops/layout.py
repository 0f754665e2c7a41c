"""Moving the head axis of attention tensors without a Transpose kernel (the composite attention's BSND layout).

MindSpore 2.10's CPU Transpose kernel builds an 8-byte index per element when its graph is compiled and
keeps it for the graph's life (~43 MB per block of a 1024-wide DiT at 512 px, see ``ops/broadcast.py``
for the same effect in broadcasting ops). Slicing each head out and stacking them is the same copy with
no such table. (The fused attentions take BSND as it is and move nothing.)
"""
from __future__ import annotations

from mindspore import ops


def heads_first(x):
    """(B, S, H, d) -> (B, H, S, d)."""
    return ops.stack([x[:, :, h] for h in range(x.shape[2])], 1)


def heads_second(x):
    """(B, H, S, d) -> (B, S, H, d)."""
    return ops.stack([x[:, h] for h in range(x.shape[1])], 2)
