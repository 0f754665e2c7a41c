"""Host driver of one cached AR generation: a ``StaticKVCache`` plus the compiled graphs that use it.

Two ways to run it:

* ``prefill`` / ``step`` return the logits (B, V) of the last token fed: the host samples (the numpy
  twin, ``TokenSampler``) and feeds the token back; one logits readback per token.
* ``sample_prefill`` / ``sample_step`` sample on the device (``DeviceTokenSampler``) and keep everything
  a step needs on the device (``DecodeState``): the last token, the step counter, the finished rows,
  the non-finite flags and the token buffer are graph outputs fed to the next step; the positions and
  uniforms of the whole generation are uploaded once, and the prefill graph plans the loop (every step's
  rotary rows, the cache's key order: ``plan_decode``), so a step adds ~10 kernels to the model's layers.
  Nothing is read back until the caller asks.

Inputs may be numpy arrays or Tensors (``graph_input``); every decode step reuses one graph, called through
``StaticGraph`` (no per-call Python checks).
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn

from ..graph_calls import StaticGraph
from ..graph_inputs import graph_input
from ..models.ar.kv_cache import StaticKVCache
from ..ops import inference_cells
from .device_sampling import DeviceTokenSampler


class CachedLM(Protocol):
    """What ``DecodeSession`` needs from a model: graph-traceable cached forwards returning last-token logits."""

    def cached_logits(self, input_ids, position_ids, cache_position, attention_mask, keys, values, key_mask): ...

    def plan_decode(self, positions, start, key_mask): ...

    def decode_logits(self, token, step, start, plan, keys, values): ...


class _CachedStep(nn.Cell):
    """Writes S new tokens into the cache, returns logits (B, V) of the last one.

    ``auto_prefix=False`` (all cells here) keeps the wrapped model's parameter names unchanged.
    """

    def __init__(self, model: nn.Cell, cache: StaticKVCache):
        super().__init__(auto_prefix=False)
        self.model = model
        self.cache = cache

    def construct(self, input_ids, position_ids, cache_position, attention_mask):
        return self.model.cached_logits(input_ids, position_ids, cache_position, attention_mask,
                                        self.cache.keys, self.cache.values, self.cache.key_mask)


class _SampledPrefill(nn.Cell):
    """Prompt in: fills the cache, plans the decode loop (``plan_decode``: rotary tables, key order) and
    samples token 0; out: a fresh ``DecodeState`` and the plan."""

    def __init__(self, model: nn.Cell, cache: StaticKVCache, end_token_id: int):
        super().__init__(auto_prefix=False)
        self.step = _CachedStep(model, cache)
        self.sampler = DeviceTokenSampler(end_token_id)

    def construct(self, input_ids, position_ids, cache_position, attention_mask, positions, start, uniforms, params,
                  limits):
        logits = self.step(input_ids, position_ids, cache_position, attention_mask)
        plan = self.step.model.plan_decode(positions, start, self.step.cache.key_mask)
        index = mint.zeros((1,), dtype=ms.int32)
        batch = input_ids.shape[0]
        state = self.sampler(logits, index, uniforms, params, limits, mint.zeros((batch,), dtype=ms.int32),
                             mint.zeros((3,), dtype=ms.int32), mint.zeros(uniforms.shape, dtype=ms.int32))
        return (state[0], index, *state[1:], *plan)


class _SampledDecode(nn.Cell):
    """Feeds the last sampled token (index ``step``) and samples the next one; its rotary rows and mask come
    from the plan, its uniform and limit from the generation's tables, by the device-side step counter."""

    def __init__(self, model: nn.Cell, cache: StaticKVCache, end_token_id: int):
        super().__init__(auto_prefix=False)
        self.model = model
        self.cache = cache
        self.sampler = DeviceTokenSampler(end_token_id)

    def construct(self, token, step, finished, flags, tokens, cos, sin, order, uniforms, start, params, limits):
        logits = self.model.decode_logits(token, step, start, (cos, sin, order), self.cache.keys, self.cache.values)
        index = step + 1
        token, finished, flags, tokens = self.sampler(logits, index, uniforms, params, limits, finished, flags, tokens)
        return token, index, finished, flags, tokens


@dataclasses.dataclass
class DecodeState:
    """Device-resident state between sampled steps; read back only when the caller chooses."""
    token: Tensor     # (B, 1) int32 the last sampled token, fed at the next step
    step: Tensor      # (1,) int32 its index among the generated tokens
    finished: Tensor  # (B,) int32 1 for rows that have emitted the end marker
    flags: Tensor     # (3,) int32 first token with non-finite logits (1-based, 0: none), their count, all finished
    tokens: Tensor    # (B, N) int32 every sampled token so far (later columns 0)


class DecodeSession:
    """One static cache and its compiled graphs (logits step, sampled prefill, sampled decode step)."""

    def __init__(self, model: CachedLM, cache: StaticKVCache, end_token_id: int):
        self.cache = cache
        self.end_token_id = end_token_id  # a row that sampled it keeps emitting it
        self.graph = StaticGraph(_CachedStep(model, cache))
        with inference_cells():  # the sampler is never trained: its CPU twin by default
            self.sampling_prefill = StaticGraph(_SampledPrefill(model, cache, end_token_id))
            self.sampling_step = StaticGraph(_SampledDecode(model, cache, end_token_id))
        self._tables: tuple[Tensor, ...] = ()  # the running generation's plan, uniforms, start, params, limits
        self._steps_left = 0

    @property
    def length(self) -> int:
        return self.cache.length

    def reset(self) -> None:
        self.cache.reset()

    def _inputs(self, input_ids, position_ids, attention_mask, cache_position) -> tuple[Tensor, ...]:
        """Checked int32 graph inputs writing ``input_ids`` (B, S) at ``cache_position`` (default: ``length``)."""
        batch = self.cache.batch_size
        if len(input_ids.shape) != 2 or input_ids.shape[0] != batch:
            raise ValueError(f"input_ids has shape {tuple(input_ids.shape)}, expected (batch={batch}, seq_len)")
        seq = input_ids.shape[1]
        start = self.cache.length if cache_position is None else int(cache_position)
        if start < 0 or start + seq > self.cache.max_len:
            raise ValueError(f"writing {seq} token(s) at cache position {start} overflows the cache of max_len "
                             f"{self.cache.max_len}; allocate a session with a larger max_len")
        self.cache.length = max(self.cache.length, start + seq)
        mask = np.ones((batch, seq), np.int32) if attention_mask is None else attention_mask
        return (graph_input("input_ids", input_ids, ms.int32, (batch, seq)),
                graph_input("position_ids", position_ids, ms.int32, (3, batch, seq)),
                Tensor(np.arange(start, start + seq, dtype=np.int32)),
                graph_input("attention_mask", mask, ms.int32, (batch, seq)))

    def prefill(self, input_ids, position_ids, attention_mask=None) -> Tensor:
        """Prompt (B, L) with positions (3, B, L) and left-padding mask (B, L) -> logits (B, V) of its last token."""
        return self.graph(*self._inputs(input_ids, position_ids, attention_mask, None))

    def step(self, token_ids, position_ids, cache_position: int | None = None) -> Tensor:
        """One token per sample (B, 1) at positions (3, B, 1) -> logits (B, V); appends at ``length`` by default."""
        return self.graph(*self._inputs(token_ids, position_ids, None, cache_position))

    def sample_prefill(self, input_ids, position_ids, attention_mask, decode_positions, uniforms,
                       params: Tensor, limits: np.ndarray | None = None) -> DecodeState:
        """Prefill and sample token 0 on the device; uploads the generation's tables once.

        ``decode_positions`` (B, 3, N) as ``RopePositions.decode`` (row k: where token k is fed),
        ``uniforms`` (B, N) as ``TokenSampler.uniforms``, ``params`` from ``sampling_params``,
        ``limits`` (N,): token k is picked among the ids below ``limits[k]`` (default: any id).
        """
        if decode_positions is None:
            raise ValueError("no decode positions: the prompt had no image grids (pass image_grid_thw)")
        batch = self.cache.batch_size
        steps = uniforms.shape[1]
        if self.cache.length + input_ids.shape[1] + steps - 1 > self.cache.max_len:
            raise ValueError(f"{steps} generated tokens after a {input_ids.shape[1]}-token prompt overflow the cache "
                             f"of max_len {self.cache.max_len}; allocate a session with a larger max_len")
        inputs = self._inputs(input_ids, position_ids, attention_mask, None)
        positions = graph_input("decode positions", np.asarray(decode_positions)[:, :, :steps].transpose(1, 0, 2),
                                ms.int32, (3, batch, steps), "; compute them with rope_positions(...).decode")
        u = graph_input("uniforms", uniforms, ms.float32, (batch, steps))
        limits = graph_input("limits", np.full(steps, np.iinfo(np.int32).max) if limits is None else limits,
                             ms.int32, (steps,))
        start = Tensor(np.array([self.cache.length], np.int32))  # the cache slot of the first fed-back token
        out = self.sampling_prefill(*inputs, positions, start, u, params, limits)
        self._tables = (*out[5:], u, start, params, limits)  # the plan (cos, sin, key order), then the tables
        self._steps_left = steps - 1
        return DecodeState(*out[:5])

    def sample_step(self, state: DecodeState) -> DecodeState:
        """Feed ``state.token`` and sample the next token on the device; nothing is read back."""
        if self._steps_left <= 0:
            raise ValueError("every token planned by sample_prefill is sampled (its uniforms have one column per "
                             "token); start the next generation with sample_prefill")
        self._steps_left -= 1
        self.cache.length += 1
        return DecodeState(*self.sampling_step(state.token, state.step, state.finished, state.flags, state.tokens,
                                               *self._tables))
