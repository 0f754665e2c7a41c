"""Static-shape key/value cache for autoregressive decoding.

Every buffer is preallocated at (batch, kv_heads, max_len, head_dim) and written in place
(``ScatterNdUpdate`` on Parameters) at the slots named by a ``cache_position`` tensor, and attention
always spans all ``max_len`` slots under a mask. So a decode step has the same input shapes at every
step and ONE compiled graph serves the whole generation; a prefill compiles once per prompt length.

The cache lives outside the model's cell tree: the model's parameters stay exactly the checkpoint's.
"""
from __future__ import annotations

from typing import Protocol

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, mint, nn, ops
from mindspore.common.initializer import Zero, initializer


def kv_write_index(cache_position, batch: int, heads: int):
    """(B, heads, S, 3) int32 ScatterNd indices of slots ``cache_position`` (S,) in a (B, heads, max_len, D) buffer."""
    seq = cache_position.shape[0]
    b = mint.arange(batch, dtype=ms.int32).reshape(batch, 1, 1).broadcast_to((batch, heads, seq))
    h = mint.arange(heads, dtype=ms.int32).reshape(1, heads, 1).broadcast_to((batch, heads, seq))
    p = cache_position.astype(ms.int32).reshape(1, 1, seq).broadcast_to((batch, heads, seq))
    return ops.stack((b, h, p), -1)


def mask_write_index(cache_position, batch: int):
    """(B, S, 2) int32 ScatterNd indices of slots ``cache_position`` (S,) in a (B, max_len) mask."""
    seq = cache_position.shape[0]
    b = mint.arange(batch, dtype=ms.int32).reshape(batch, 1).broadcast_to((batch, seq))
    p = cache_position.astype(ms.int32).reshape(1, seq).broadcast_to((batch, seq))
    return ops.stack((b, p), -1)


class StaticKVCache(nn.Cell):
    """Per-layer key and value buffers plus ``key_mask`` (B, max_len) int32: 1 where a slot holds a real token.

    Slots never written, or written by left padding, stay 0 in ``key_mask`` and are never attended, so
    ``reset`` only clears the mask and the host-side ``length``.
    """

    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: ms.Type = ms.float32, prefix: str = "kv_cache"):
        super().__init__()
        if min(num_layers, batch_size, num_kv_heads, max_len, head_dim) < 1:
            raise ValueError("StaticKVCache: every size must be >= 1, got "
                             f"layers={num_layers} batch={batch_size} kv_heads={num_kv_heads} max_len={max_len} "
                             f"head_dim={head_dim}")
        self.batch_size = batch_size
        self.max_len = max_len
        shape = (batch_size, num_kv_heads, max_len, head_dim)

        def buffer(name: str, shape, dtype) -> Parameter:
            return Parameter(initializer(Zero(), shape, dtype), name=f"{prefix}.{name}", requires_grad=False)

        self.keys = ParameterTuple([buffer(f"keys.{i}", shape, dtype) for i in range(num_layers)])
        self.values = ParameterTuple([buffer(f"values.{i}", shape, dtype) for i in range(num_layers)])
        self.key_mask = buffer("key_mask", (batch_size, max_len), ms.int32)
        self.length = 0

    def reset(self) -> None:
        """Forget every cached token (the buffers are reused as they are)."""
        self.key_mask.set_data(Tensor(np.zeros((self.batch_size, self.max_len), np.int32)))
        self.length = 0


class CachedLM(Protocol):
    """What ``DecodeSession`` needs from a model: a graph-traceable cached forward returning last-token logits."""

    def cached_logits(self, input_ids, position_ids, cache_position, attention_mask, keys, values, key_mask): ...


class _CachedStep(nn.Cell):
    """The compiled step: writes S new tokens into the cache, returns logits (B, V) of the last one.

    ``auto_prefix=False`` keeps the wrapped model's parameter names unchanged.
    """

    def __init__(self, model: nn.Cell, cache: StaticKVCache):
        super().__init__(auto_prefix=False)
        self.model = model
        self.cache = cache

    def construct(self, input_ids, position_ids, cache_position, attention_mask):
        return self.model.cached_logits(input_ids, position_ids, cache_position, attention_mask,
                                        self.cache.keys, self.cache.values, self.cache.key_mask)


def host_array(value) -> np.ndarray:
    """numpy view of a host input given as a Tensor or anything array-like."""
    return value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)


def int32_input(name: str, value, shape: tuple[int, ...], hint: str = "") -> Tensor:
    """Checked int32 graph input: ``value`` must have ``shape`` and hold integers (or bools)."""
    array = host_array(value)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}{hint}")
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return Tensor(array.astype(np.int32))


class DecodeSession:
    """Host driver of one generation: a static cache plus its compiled step graph.

    ``prefill`` writes the prompt at slots [length, length + L) and returns the last prompt token's
    logits; ``step`` feeds one token per sample at slot ``length`` (or ``cache_position``) and returns its
    logits. Inputs may be numpy arrays or Tensors; they are checked and cast to int32 so that every
    decode step reuses one graph.
    """

    def __init__(self, model: CachedLM, cache: StaticKVCache):
        self.cache = cache
        self.graph = _CachedStep(model, cache)

    @property
    def length(self) -> int:
        return self.cache.length

    def reset(self) -> None:
        self.cache.reset()

    def _run(self, input_ids, position_ids, attention_mask, cache_position) -> Tensor:
        batch = self.cache.batch_size
        ids = host_array(input_ids)
        if ids.ndim != 2 or ids.shape[0] != batch:
            raise ValueError(f"input_ids has shape {ids.shape}, expected (batch={batch}, seq_len)")
        seq = ids.shape[1]
        start = self.cache.length if cache_position is None else int(cache_position)
        if start < 0 or start + seq > self.cache.max_len:
            raise ValueError(f"writing {seq} token(s) at cache position {start} overflows the cache of max_len "
                             f"{self.cache.max_len}; allocate a session with a larger max_len")
        mask = np.ones((batch, seq), np.int32) if attention_mask is None else attention_mask
        logits = self.graph(int32_input("input_ids", ids, (batch, seq)),
                            int32_input("position_ids", position_ids, (3, batch, seq)),
                            Tensor(np.arange(start, start + seq, dtype=np.int32)),
                            int32_input("attention_mask", mask, (batch, seq)))
        self.cache.length = max(self.cache.length, start + seq)
        return logits

    def prefill(self, input_ids, position_ids, attention_mask=None) -> Tensor:
        """Prompt (B, L) with positions (3, B, L) and left-padding mask (B, L) -> logits (B, V) of its last token."""
        return self._run(input_ids, position_ids, attention_mask, None)

    def step(self, token_ids, position_ids, cache_position: int | None = None) -> Tensor:
        """One token per sample (B, 1) at positions (3, B, 1) -> logits (B, V); appends at ``length`` by default."""
        return self._run(token_ids, position_ids, None, cache_position)
