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

import numpy as np
from mindspore import Tensor, nn

from ..ops import resolve
from .sampling import SamplingConfig


def sampling_params(config: SamplingConfig) -> Tensor:
    """(4,) float32 graph input: temperature, top_k (0: off), top_p, 1 if sampling else 0 (greedy)."""
    return Tensor(np.array([config.temperature, config.top_k, config.top_p, float(config.do_sample)], np.float32))


class DeviceTokenSampler(nn.Cell):
    """One decode step's token selection: ``(logits (B, V), index (1,), uniforms (B, N), params (4,), limits (N,),
    finished (B,), flags (3,), tokens (B, N))`` -> the token (B, 1) and the updated ``finished``, ``flags`` and
    ``tokens`` (all int32; see ``ops.sample_token.sample_step``). Token ``index`` is picked among the ids below
    ``limits[index]`` (V: any id), as ``TokenSampler``'s ``allowed``; ``flags`` carry the in-graph half of
    ``finite.check_finite``. The rules are the ops layer's ``sample_step`` (a C++ twin on CPU)."""

    def __init__(self, end_token_id: int):
        super().__init__()
        self.end_token_id = end_token_id  # a row that sampled it keeps emitting it
        self.sample_step = resolve("sample_step").fn

    def construct(self, logits, index, uniforms, params, limits, finished, flags, tokens):
        return self.sample_step(logits, index, uniforms, params, limits, finished, flags, tokens, self.end_token_id)
