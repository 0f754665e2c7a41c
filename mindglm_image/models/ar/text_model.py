"""GLM-4 style text decoder of the AR model (``model.language_model``).

Each layer: RMSNorm -> grouped-query attention with partial 3-D rotary -> RMSNorm -> residual, then
RMSNorm -> fused gate/up SiLU MLP -> RMSNorm -> residual. Attention either runs over the given tokens
(full forward) or writes them into a ``StaticKVCache`` and attends over all of its slots.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import mint, nn, ops

from ...config.ar import GlmImageTextConfig
from ...ops import resolve
from ...ops.attention import MASKED
from ..layers import Embedding, Linear, RMSNorm
from .kv_cache import kv_write_index, mask_write_index
from .rope import MultimodalRotaryEmbedding

_NEVER = int(np.iinfo(np.int32).max)  # key order of a slot no query may see
# the two values of the mask bias as graph constants: Python floats in ops.where would each run a fill kernel
_SEEN, _UNSEEN = ms.Tensor(0.0, ms.float32), ms.Tensor(MASKED, ms.float32)


def key_order(key_valid):
    """(B, K) int32: each key slot's index where ``key_valid`` (B, K) is nonzero (a real token), int32 max where
    it is 0 (left padding, an empty cache slot): a key is visible to the query at slot q iff its order <= q."""
    keys = key_valid.shape[1]
    return ops.where(key_valid != 0, mint.arange(keys, dtype=ms.int32).reshape(1, keys), _NEVER).astype(ms.int32)


def causal_key_mask(order, query_index):
    """Additive fp32 bias (B, 1, S, K): query at absolute slot ``query_index`` (S,) may see key slot k <= it
    if the slot holds a real token (0), every other key gets ``MASKED``. ``order`` (B, K) from ``key_order``."""
    batch, keys = order.shape
    visible = order.reshape(batch, 1, 1, keys) <= query_index.astype(ms.int32).reshape(1, 1, -1, 1)
    return ops.where(visible, _SEEN, _UNSEEN)


class GlmImageTextAttention(nn.Cell):
    """Grouped-query attention with partial 3-D rotary; with a cache, writes the new keys/values into it
    and attends over all of its slots."""

    def __init__(self, config: GlmImageTextConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.resolved_head_dim
        self.scaling = self.head_dim ** -0.5
        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = Linear(hidden, self.num_heads * self.head_dim, bias=bias, dtype=dtype)
        self.k_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias, dtype=dtype)
        self.v_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias, dtype=dtype)
        self.o_proj = Linear(self.num_heads * self.head_dim, hidden, bias=False, dtype=dtype)
        self.rotary = resolve("rotary").fn
        self.attention = resolve("attention").fn

    def construct(self, hidden, cos, sin, mask, cache_k=None, cache_v=None, write_index=None):
        """hidden (B, S, hidden); mask (B, 1, S, K) additive bias (``causal_key_mask``), K = S, or K = max_len
        when a cache is given."""
        batch, seq, _ = hidden.shape
        q = self.q_proj(hidden).reshape(batch, seq, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = self.k_proj(hidden).reshape(batch, seq, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = self.v_proj(hidden).reshape(batch, seq, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        cos, sin = cos.expand_dims(1), sin.expand_dims(1)  # (B, S, R) -> (B, 1, S, R): one table for all heads
        q = self.rotary(q, cos, sin)
        k = self.rotary(k, cos, sin)
        if cache_k is not None:
            k = ops.scatter_nd_update(cache_k, write_index, k)
            v = ops.scatter_nd_update(cache_v, write_index, v)
        out = self.attention(q, k, v, self.scaling, mask).transpose(0, 2, 1, 3)
        return self.o_proj(out.reshape(batch, seq, self.num_heads * self.head_dim))


class GlmImageTextMLP(nn.Cell):
    """down(swiglu(gate_up(x))) with the gate and up projections fused in one matrix."""

    def __init__(self, config: GlmImageTextConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.swiglu = resolve("swiglu").fn
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=False, dtype=dtype)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False, dtype=dtype)

    def construct(self, x):
        return self.down_proj(self.swiglu(self.gate_up_proj(x)))


class GlmImageTextDecoderLayer(nn.Cell):
    """Sandwich-norm GLM-4 layer: each sub-block's output is RMS-normed before its residual add."""

    def __init__(self, config: GlmImageTextConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.eps = eps = config.rms_norm_eps
        self.self_attn = GlmImageTextAttention(config, dtype)
        self.mlp = GlmImageTextMLP(config, dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.post_self_attn_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.post_mlp_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.add_rms_norm = resolve("add_rms_norm").fn

    def construct(self, hidden, cos, sin, mask, cache_k=None, cache_v=None, write_index=None):
        # 1. attention on the normed input, its output normed
        attn = self.self_attn(self.input_layernorm(hidden), cos, sin, mask, cache_k, cache_v, write_index)
        attn = self.post_self_attn_layernorm(attn)
        # 2. residual add fused with the MLP's input norm
        mlp_input, hidden = self.add_rms_norm(attn, hidden, self.post_attention_layernorm.weight, self.eps)
        # 3. MLP, its output normed, residual add
        return hidden + self.post_mlp_layernorm(self.mlp(mlp_input))


class GlmImageTextModel(nn.Cell):
    """Token ids -> final-normed hidden states; positions are 3-D (see ``rope.compute_rope_positions``)."""

    def __init__(self, config: GlmImageTextConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.num_kv_heads = config.num_key_value_heads
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        self.layers = nn.CellList([GlmImageTextDecoderLayer(config, dtype) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.rotary_emb = MultimodalRotaryEmbedding(config.rotary_dim, config.rope_theta, config.mrope_section, dtype)

    def construct(self, input_ids, position_ids, attention_mask):
        """Full causal forward: ids (B, L), positions (3, B, L), padding mask (B, L) -> hidden (B, L, hidden)."""
        seq = input_ids.shape[1]
        mask = causal_key_mask(key_order(attention_mask), mint.arange(seq, dtype=ms.int32))
        cos, sin = self.rotary_emb(position_ids)
        hidden = self.embed_tokens(input_ids)
        for layer in self.layers:
            hidden = layer(hidden, cos, sin, mask)
        return self.norm(hidden)

    def forward_cached(self, input_ids, position_ids, cache_position, attention_mask, keys, values, key_mask):
        """Write S tokens at cache slots ``cache_position`` (S,) and return their hidden states (B, S, hidden).

        ``attention_mask`` (B, S) marks the new tokens' padding; ``keys``/``values``/``key_mask`` are a
        ``StaticKVCache``'s buffers, updated in place.
        """
        batch = input_ids.shape[0]
        key_mask = ops.scatter_nd_update(key_mask, mask_write_index(cache_position, batch),
                                         attention_mask.astype(ms.int32))
        cos, sin = self.rotary_emb(position_ids)
        return self._cached_layers(input_ids, cos, sin, causal_key_mask(key_order(key_mask), cache_position),
                                   cache_position, keys, values)

    def plan_decode(self, positions, start, key_mask):
        """Before a decode loop: what its steps would otherwise recompute every step.

        ``positions`` (3, B, N): where decode step k's token sits (k < N - 1 are fed, at cache slots
        ``start + k``, ``start`` (1,)). Marks those slots as real tokens in ``key_mask`` now (the causal
        order hides each until its step) and returns the rotary tables cos, sin (B, N, rotary_dim) and the
        cache's ``key_order`` (B, K), the inputs of ``forward_decode``.
        """
        steps = positions.shape[2] - 1
        if steps > 0:  # static: a one-token generation feeds nothing back
            slots = start + mint.arange(steps, dtype=ms.int32)
            batch = key_mask.shape[0]
            key_mask = ops.scatter_nd_update(key_mask, mask_write_index(slots, batch),
                                             mint.ones((batch, steps), dtype=ms.int32))
        cos, sin = self.rotary_emb(positions)
        return cos, sin, key_order(key_mask)

    def forward_decode(self, input_ids, step, start, cos, sin, order, keys, values):
        """Decode step ``step`` (1,) of a loop planned by ``plan_decode``: token (B, 1) at slot ``start + step``
        -> its hidden state (B, 1, hidden). The mask is two comparisons against the planned key order, and the
        rotary rows are gathered from the planned tables (no per-step mask write or rotary maths)."""
        slot = start + step
        return self._cached_layers(input_ids, ops.gather(cos, step, 1), ops.gather(sin, step, 1),
                                   causal_key_mask(order, slot), slot, keys, values)

    def _cached_layers(self, input_ids, cos, sin, mask, cache_position, keys, values):
        """The decoder layers over new tokens written at ``cache_position`` (S,), attending over every slot."""
        write_index = kv_write_index(cache_position, input_ids.shape[0], self.num_kv_heads)
        hidden = self.embed_tokens(input_ids)
        for i in range(len(self.layers)):
            hidden = self.layers[i](hidden, cos, sin, mask, keys[i], values[i], write_index)
        return self.norm(hidden)
