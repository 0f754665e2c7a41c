"""Host-side 2-D rotary tables of the DiT, one pair per latent patch grid.

Computed in numpy so the compiled graph sees them as plain inputs and stays static per image size.
"""
from __future__ import annotations

import numpy as np


def rotary_tables(head_dim: int, grid_h: int, grid_w: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each (grid_h * grid_w, head_dim) float32, for a row-major patch grid.

    Each head is laid out as [row freqs | column freqs] twice (rotate-half layout): the first quarter
    rotates with the patch row, the second with the column, and the second half repeats the first.
    """
    if head_dim % 4:
        raise ValueError(f"head_dim={head_dim} must be a multiple of 4 for the 2-D rotary embedding")
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"patch grid must be at least 1x1, got {grid_h}x{grid_w}")
    f32 = np.float32
    half = head_dim // 2
    exponent = np.arange(0, half, 2, dtype=f32)[: half // 2] / f32(half)
    inv_freq = (f32(1.0) / np.power(f32(theta), exponent, dtype=f32)).astype(f32)
    rows = np.outer(np.arange(grid_h, dtype=f32), inv_freq).astype(f32)   # (h, head_dim/4)
    cols = np.outer(np.arange(grid_w, dtype=f32), inv_freq).astype(f32)   # (w, head_dim/4)
    quarter = inv_freq.shape[0]
    freqs = np.concatenate([np.broadcast_to(rows[:, None, :], (grid_h, grid_w, quarter)),
                            np.broadcast_to(cols[None, :, :], (grid_h, grid_w, quarter))], axis=-1)
    freqs = np.concatenate([freqs, freqs], axis=-1).reshape(grid_h * grid_w, head_dim)
    return np.cos(freqs).astype(f32), np.sin(freqs).astype(f32)
