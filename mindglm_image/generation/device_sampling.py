"""On-device next-token selection: ``TokenSampler``'s rules (temperature -> top-k -> top-p, inverse-CDF
draw, or argmax) as graph ops, so an AR decode step returns token ids instead of logits.

Random numbers: the host draws every uniform a generation will use ONCE, from the very numpy
generators ``TokenSampler`` uses (per-row seeds: one generator per row), and uploads them as one
(B, N) table; the decode step reads its column in-graph. Why not an in-graph counter hash of
(seed, step, row): 32-bit multiply-with-wraparound, shifts and xor are not supported alike on every
MindSpore backend and dtype, whereas the table is one upload of 4 bytes per token and row and gives
the device sampler exactly the host sampler's stream: for the same seed both pick the same token
unless u falls within float32 rounding of a CDF boundary. A row's uniforms come from its own seed only,
so a prompt's tokens do not depend on its batch neighbours.

Sampling parameters are tensor inputs (``sampling_params``), not graph constants: one compiled graph
serves every temperature / top-k / top-p / greedy setting.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn, ops

from .sampling import SamplingConfig


def sampling_params(config: SamplingConfig) -> Tensor:
    """(4,) float32 graph input: temperature, top_k (0: off), top_p, 1 if sampling else 0 (greedy)."""
    return Tensor(np.array([config.temperature, config.top_k, config.top_p, float(config.do_sample)], np.float32))


class DeviceTokenSampler(nn.Cell):
    """``(logits (B, V), uniforms (B, 1), params (4,), limit (1,))`` -> token ids (B,) int32 and the number
    of non-finite logits per row (B,) int32 (the in-graph half of ``finite.check_finite``). Only ids below
    ``limit`` can be picked (``limit`` = V: any id), as ``TokenSampler``'s ``allowed``."""

    def construct(self, logits, uniforms, params, limit):
        logits = logits.astype(ms.float32)
        vocab = logits.shape[-1]
        non_finite = ops.logical_not(ops.isfinite(logits)).astype(ms.int32).sum(-1)
        # 0. ids at or above the limit are out (counted as non-finite above only if they were so already)
        logits = ops.where(mint.arange(vocab, dtype=ms.int32).reshape(1, -1) < limit.reshape(1, 1), logits,
                           float("-inf"))
        greedy = ops.argmax(logits, -1).astype(ms.int32)
        # 1. temperature; one ascending sort serves both filters
        scores = logits / params[0]
        ascending, _ = ops.sort(scores, -1)
        # 2. top-k: the k-th largest score is ascending[V - k] (k = 0 acts as k = V: nothing removed)
        k = ops.where(params[1] > 0, ops.minimum(params[1], float(vocab)), float(vocab)).astype(ms.int32)
        kth = ops.gather_elements(ascending, 1, (vocab - k).reshape(1, 1).broadcast_to((logits.shape[0], 1)))
        ascending = ops.where(ascending < kth, float("-inf"), ascending)
        # 3. top-p: drop the least likely tokens whose cumulative mass is <= 1 - top_p (a prefix of the
        #    ascending order), always keeping the most likely; the smallest kept score is the threshold
        cumulative = ops.cumsum(mint.softmax(ascending, -1), -1)
        dropped = (cumulative[:, :-1] <= 1 - params[2]).astype(ms.int32).sum(-1, keepdims=True)
        threshold = ops.maximum(ops.gather_elements(ascending, 1, dropped), kth)
        scores = ops.where(scores >= threshold, scores, float("-inf"))
        # 4. inverse CDF in vocabulary order, as TokenSampler: the first token whose cumulative mass reaches u
        cdf = ops.cumsum(mint.softmax(scores, -1), -1)
        picked = (cdf < uniforms * cdf[:, -1:]).astype(ms.int32).sum(-1)
        sampled = ops.minimum(picked, vocab - 1)
        return ops.where(params[3] > 0, sampled, greedy), non_finite
