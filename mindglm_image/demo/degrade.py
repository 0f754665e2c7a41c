"""Imperfections of a generated image (blur, sensor-like noise, JPEG compression) to test the checker with."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter


def degrade(img: Image.Image, seed: int, blur: tuple[float, float] = (0.8, 1.5), noise: float = 10.0,
            jpeg_quality: tuple[int, int] = (20, 40)) -> Image.Image:
    """Gaussian blur (radius drawn from ``blur``), Gaussian noise (``noise`` sd, 0..255 scale), then a JPEG
    round trip at a quality drawn from ``jpeg_quality``; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    img = img.convert("RGB").filter(ImageFilter.GaussianBlur(rng.uniform(*blur)))
    noisy = np.asarray(img, dtype=np.float64) + rng.normal(0.0, noise, (img.height, img.width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, format="JPEG",
                                                                   quality=int(rng.integers(*jpeg_quality)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
