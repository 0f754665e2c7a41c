"""Next-token selection with the same rules as ``transformers`` (temperature -> top-k -> top-p), seeded.

``TokenSampler`` runs on the host over the (B, vision_vocab) logits of one step. It owns the random
stream (numpy Generators, so a seed reproduces a run) and is the tested twin of the on-device sampler
(``device_sampling.DeviceTokenSampler``), which draws its uniforms from the same stream
(``TokenSampler.uniforms``) so both pick the same token for the same seed up to float32 rounding.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    do_sample: bool = True
    temperature: float = 0.9
    top_p: float = 0.75
    top_k: int = 0           # 0 disables top-k
    seed: int | None = 0

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}; use do_sample=False for greedy")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")

    @classmethod
    def from_generation_config(cls, path: str | Path, **overrides) -> "SamplingConfig":
        """Defaults from the checkpoint's ``generation_config.json`` (missing file: the model's defaults)."""
        values: dict = {}
        path = Path(path)
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            for key in ("do_sample", "temperature", "top_p", "top_k"):
                if data.get(key) is not None:
                    values[key] = data[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class TokenSampler:
    """Chooses the next token of every sample in a batch.

    With ``row_seeds`` each sample draws from its own generator, so a prompt's tokens depend on its seed
    only, not on which batch it was grouped into (batch jobs stay reproducible when resharded).
    """

    def __init__(self, config: SamplingConfig, row_seeds: Sequence[int] | None = None):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.row_rngs = None if row_seeds is None else [np.random.default_rng(s) for s in row_seeds]

    def uniforms(self, batch: int, steps: int) -> np.ndarray:
        """(B, steps) float64: column k is the uniform ``__call__`` would use for each row at its k-th call
        (zeros and nothing drawn when greedy). Advances the stream exactly as ``steps`` calls would."""
        if not self.config.do_sample:
            return np.zeros((batch, steps))
        if self.row_rngs is None:
            return self.rng.random((steps, batch)).T.copy()  # call k draws rng.random(batch)
        if len(self.row_rngs) != batch:
            raise ValueError(f"{len(self.row_rngs)} row seeds for a batch of {batch}")
        return np.stack([rng.random(steps) for rng in self.row_rngs])

    def filtered_logits(self, logits: np.ndarray) -> np.ndarray:
        """Logits after temperature, top-k and top-p; removed tokens are -inf."""
        cfg = self.config
        scores = logits.astype(np.float32) / np.float32(cfg.temperature)
        if cfg.top_k:
            k = min(cfg.top_k, scores.shape[-1])
            kth = np.partition(scores, -k, axis=-1)[..., -k][..., None]
            scores = np.where(scores < kth, -np.inf, scores)
        if cfg.top_p < 1.0:
            order = np.argsort(scores, axis=-1, kind="stable")
            ascending = np.take_along_axis(scores, order, axis=-1)
            probs = _softmax(ascending)
            cumulative = np.cumsum(probs, axis=-1)
            drop_sorted = cumulative <= (1 - cfg.top_p)
            drop_sorted[..., -1] = False  # always keep the most likely token
            drop = np.zeros_like(drop_sorted)
            np.put_along_axis(drop, order, drop_sorted, axis=-1)
            scores = np.where(drop, -np.inf, scores)
        return scores

    def __call__(self, logits: np.ndarray, allowed: int | None = None) -> np.ndarray:
        """(B, V) logits -> (B,) int64 token ids; with ``allowed`` only ids below it can be picked."""
        if allowed is not None and allowed < logits.shape[-1]:
            logits = logits.astype(np.float32, copy=True)
            logits[:, allowed:] = -np.inf
        if not self.config.do_sample:
            return np.argmax(logits, axis=-1).astype(np.int64)
        probs = _softmax(self.filtered_logits(logits)).astype(np.float64)
        probs /= probs.sum(axis=-1, keepdims=True)
        u = self.uniforms(probs.shape[0], 1)
        picked = (np.cumsum(probs, axis=-1) < u).sum(axis=-1)
        return np.minimum(picked, probs.shape[-1] - 1).astype(np.int64)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)
