"""Raw-image training data for the VAE and image-tokenizer jobs: the target images of a dataset, decoded once.

These two jobs learn from pixels alone (no captions, no prepared latents), so they read the same
``.jsonl`` / image folder that ``prepare-data`` reads (``training.data.read_dataset``) and keep each image
as uint8 in memory (the demo set: 2000 x 128 x 128 x 3 = 98 MB). An unusable sample is reported by id
and skipped, as ``prepare-data`` does.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .data import read_dataset
from ..processor.image_processing import load_image


class ImageDataset:
    """``ds[i]`` -> ``{"pixels": uint8 (H, W, 3), "size": [h, w]}``; buckets by ``size``.

    ``sizes`` (pixel (h, w) pairs) lists each image once per size (the batch maker resizes to it); without
    it every image keeps its own size."""

    def __init__(self, path: str | os.PathLike, sizes: list[tuple[int, int]] | None = None):
        self.images: list[np.ndarray] = []
        self.skipped: list[dict] = []
        for sample in read_dataset(path):
            try:
                if sample.problem:
                    raise ValueError(sample.problem)
                self.images.append(np.asarray(load_image(sample.target).convert("RGB")))
            except (ValueError, OSError) as err:
                self.skipped.append({"id": sample.id, "reason": str(err)})
                print(f"skipped sample {sample.id}: {err}", file=sys.stderr)
        if not self.images:
            raise ValueError(f"every sample of {path} was skipped ({len(self.skipped)}); see the reasons above")
        self.sizes = [tuple(s) for s in sizes] if sizes else None

    def __len__(self) -> int:
        return len(self.images) * (len(self.sizes) if self.sizes else 1)

    def _size(self, index: int) -> tuple[int, int]:
        if self.sizes:
            return self.sizes[index // len(self.images)]
        return self.images[index].shape[:2]

    def buckets(self) -> dict[tuple[int, int], list[int]]:
        out: dict[tuple[int, int], list[int]] = {}
        for i in range(len(self)):
            out.setdefault(tuple(int(v) for v in self._size(i)), []).append(i)
        return out

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} is outside the {len(self)} samples")
        return {"pixels": self.images[index % len(self.images)], "size": np.array(self._size(index), np.int32)}
