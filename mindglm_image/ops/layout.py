"""Moving the head axis of attention tensors without a Transpose kernel.

MindSpore 2.10's CPU Transpose kernel builds an 8-byte index per element when its graph is compiled and
keeps it for the graph's life (~43 MB per block of a 1024-wide DiT at 512 px, see ``ops/broadcast.py``
for the same effect in broadcasting ops). Slicing each head out and stacking them is the same copy with
no such table; on other devices the plain permute is kept.
"""
from __future__ import annotations

from mindspore import mint, ops


def heads_first(x, per_head_slices: bool):
    """(B, S, H, d) -> (B, H, S, d)."""
    if not per_head_slices:
        return x.permute(0, 2, 1, 3)
    return ops.stack([x[:, :, h] for h in range(x.shape[2])], 1)


def heads_last_flat(x, per_head_slices: bool):
    """(B, H, S, d) -> (B, S, H * d)."""
    b, heads, seq, head_dim = x.shape
    if not per_head_slices:
        return x.permute(0, 2, 1, 3).reshape(b, seq, heads * head_dim)
    return mint.cat([x[:, h] for h in range(heads)], -1)
