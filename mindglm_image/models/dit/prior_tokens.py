"""Host-side mapping of the AR model's token grid onto the DiT's latent patch grid.

The AR model emits one id per 32x32 pixels; the DiT has one patch per 16x16 pixels (VAE factor 8,
patch 2), so each id is repeated over a 2x2 block (nearest-neighbour 2x upsampling).
"""
from __future__ import annotations

import numpy as np

UPSAMPLE = 2  # DiT patches per AR token along each side


def upsample_prior_tokens(token_ids, grid_h: int, grid_w: int) -> np.ndarray:
    """h*w row-major ids -> (1, 2h * 2w) int64 ids of the (2h, 2w) grid, row-major (the pipeline's layout)."""
    ids = np.asarray(token_ids)
    if ids.size != grid_h * grid_w:
        raise ValueError(f"expected {grid_h}x{grid_w} = {grid_h * grid_w} token ids, got {ids.size}; "
                         "pass the target grid's ids only (no preview or start/end tokens)")
    grid = ids.astype(np.int64).reshape(grid_h, grid_w)
    return np.repeat(np.repeat(grid, UPSAMPLE, axis=0), UPSAMPLE, axis=1).reshape(1, -1)
