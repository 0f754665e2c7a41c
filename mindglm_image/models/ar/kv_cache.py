"""Static-shape key/value cache for autoregressive decoding.

Every buffer is preallocated at (batch, kv_heads, max_len, head_dim) and written in place
(``ScatterNdUpdate`` on Parameters) at the slots named by a ``cache_position`` tensor, and attention
always spans all ``max_len`` slots under a mask. So a decode step has the same input shapes at every
step and ONE compiled graph serves the whole generation; a prefill compiles once per prompt length.

The cache lives outside the model's cell tree: the model's parameters stay exactly the checkpoint's.
Its host driver (graphs, sampling, the decode loop) is ``generation.decode_session.DecodeSession``.
"""
from __future__ import annotations

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
