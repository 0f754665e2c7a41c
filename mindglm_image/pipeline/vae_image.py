"""Reference images for the VAE: resize to the DiT's multiple and scale to [-1, 1], as the pipeline does."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..models.vae.processing import normalize_images


def vae_input(image: Image.Image, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, 3, h, w) float32 in [-1, 1] and its pixel (h, w): sides floored to ``multiple`` (Lanczos resize)."""
    width, height = image.size
    h, w = (height // multiple) * multiple, (width // multiple) * multiple
    if h < multiple or w < multiple:
        raise ValueError(f"reference image of {width}x{height} px is smaller than {multiple} px; use a larger image")
    image = image.convert("RGB")
    if (w, h) != image.size:
        image = image.resize((w, h), resample=Image.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    return normalize_images(pixels.transpose(2, 0, 1)[None]), (h, w)
