"""GLM-4 style text decoder of the AR model (``model.language_model``).

Each layer: RMSNorm -> grouped-query attention with partial 3-D rotary -> RMSNorm -> residual, then
RMSNorm -> fused gate/up SiLU MLP -> RMSNorm -> residual. Attention either runs over the given tokens
(full forward) or writes them into a ``StaticKVCache`` and attends over all of its slots.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, nn, ops

from ...config.ar import GlmImageTextConfig
from ...ops import resolve
from ...ops.attention import MASKED
from ..layers import Embedding, Linear, RMSNorm
from .kv_cache import kv_write_index, mask_write_index
from .rope import MultimodalRotaryEmbedding


def causal_key_mask(key_valid, query_index):
    """Additive fp32 bias (B, 1, S, K): query at absolute slot ``query_index`` (S,) may see key slot k <= it
    if valid (0), every other key gets ``MASKED``.

    ``key_valid`` (B, K) is nonzero for real tokens (0 for left padding and empty cache slots).
    """
    keys = key_valid.shape[1]
    causal = mint.arange(keys, dtype=ms.int32).reshape(1, keys) <= query_index.astype(ms.int32).reshape(-1, 1)
    visible = ops.logical_and(causal.reshape(1, 1, -1, keys), (key_valid != 0).reshape(key_valid.shape[0], 1, 1, keys))
    return ops.where(visible, 0.0, MASKED).astype(ms.float32)


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
        mask = causal_key_mask(attention_mask, mint.arange(seq, dtype=ms.int32))
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
        mask = causal_key_mask(key_mask, cache_position)
        write_index = kv_write_index(cache_position, batch, self.num_kv_heads)
        cos, sin = self.rotary_emb(position_ids)
        hidden = self.embed_tokens(input_ids)
        for i in range(len(self.layers)):
            hidden = self.layers[i](hidden, cos, sin, mask, keys[i], values[i], write_index)
        return self.norm(hidden)
