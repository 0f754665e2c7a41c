"""Reference images -> prior token ids for the AR prompt (image-to-image).

All images are encoded by the vision encoder in one packed call; each image's features are then laid
out as a (1, hidden, h, w) map and quantised separately, and the ids are concatenated in image order.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np

from .vision import GlmImageVisionModel
from .vqvae import GlmImageVQVAE


def encode_reference_images(visual: GlmImageVisionModel, vqmodel: GlmImageVQVAE, pixel_values: np.ndarray,
                            grid_thw: np.ndarray) -> np.ndarray:
    """VQ ids (sum of h*w over images,) int64 of the images packed in ``pixel_values``.

    ``pixel_values`` (total_patches, C*p*p) and ``grid_thw`` (num_images, 3) come from
    ``preprocess_images``; each image's ids are row-major over its (h, w) grid.
    """
    grid = np.asarray(grid_thw, dtype=np.int64)
    features = visual.encode(pixel_values, grid).astype(ms.float32).asnumpy()  # numpy has no bf16
    ids, start = [], 0
    for _, h, w in grid.tolist():
        image = features[start:start + h * w].reshape(1, h, w, -1).transpose(0, 3, 1, 2)
        start += h * w
        ids.append(vqmodel.encode(ms.Tensor(np.ascontiguousarray(image))).asnumpy().astype(np.int64))
    return np.concatenate(ids)
