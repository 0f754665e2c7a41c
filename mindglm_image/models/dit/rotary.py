"""Host-side 2-D rotary tables of the DiT, one pair per latent patch grid.

Computed in numpy so the compiled graph sees them as plain inputs and stays static per image size.
"""
from __future__ import annotations

import numpy as np


def rotary_tables(head_dim: int, grid_h: int, grid_w: int, text_tokens: int = 0,
                  theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each (text_tokens + grid_h * grid_w, head_dim) float32: identity rows (cos 1, sin 0) for the
    glyph tokens in front of a row-major patch grid.

    Each head is laid out as [row freqs | column freqs] twice (rotate-half layout): the first quarter
    rotates with the patch row, the second with the column, and the second half repeats the first. The glyph
    tokens are not rotated; identity rows leave them exactly as they are (x * 1 + x' * 0), so one rotary pass
    covers the joint [text | image] sequence instead of slicing q and k and concatenating them in every block.
    """
    if head_dim % 4:
        raise ValueError(f"head_dim={head_dim} must be a multiple of 4 for the 2-D rotary embedding")
    if grid_h < 1 or grid_w < 1 or text_tokens < 0:
        raise ValueError(f"patch grid must be at least 1x1 after >= 0 text tokens, got {grid_h}x{grid_w} after "
                         f"{text_tokens}")
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
    text = np.zeros((text_tokens, head_dim), f32)
    return (np.concatenate([np.ones_like(text), np.cos(freqs).astype(f32)]),
            np.concatenate([text, np.sin(freqs).astype(f32)]))
