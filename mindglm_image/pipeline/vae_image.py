"""Reference images for the VAE: resize to the size the AR token grid implies and scale to [-1, 1].

The AR processor resizes a reference image to its pixel budget (about half size, within min/max
pixels); the DiT needs one latent patch per upsampled AR token. So the VAE input size follows from the
AR grid (``size_for_grid``), not from the raw photo: a 4000 x 3000 photo is encoded at the size its
tokens describe. For images already at that size (the reference pipeline's working cases: sides that
are multiples of the DiT's 16-px patch) this is the reference's floor-to-multiple size, no resize.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..models.dit.prior_tokens import UPSAMPLE
from ..models.vae.processing import normalize_images


def size_for_grid(grid_h: int, grid_w: int, multiple: int) -> tuple[int, int]:
    """Pixel (h, w) whose latent patch grid is the AR grid upsampled (``multiple`` = VAE factor x DiT patch)."""
    return grid_h * UPSAMPLE * multiple, grid_w * UPSAMPLE * multiple


def vae_input(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """(1, 3, h, w) float32 in [-1, 1] of ``image`` resized (Lanczos, as the reference) to pixel ``size``."""
    h, w = size
    image = image.convert("RGB")
    if (w, h) != image.size:
        image = image.resize((w, h), resample=Image.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return normalize_images(pixels.transpose(2, 0, 1)[None])
