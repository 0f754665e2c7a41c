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
from ..layers import Embedding, Linear, RMSNorm
from .kv_cache import kv_write_index, mask_write_index
from .rope import MultimodalRotaryEmbedding

_MASKED = float(np.finfo(np.float32).min)


def causal_key_mask(key_valid, query_index):
    """Boolean (B, 1, S, K): query at absolute slot ``query_index`` (S,) may see key slot k <= it if valid.

    ``key_valid`` (B, K) is nonzero for real tokens (0 for left padding and empty cache slots).
    """
    keys = key_valid.shape[1]
    causal = mint.arange(keys, dtype=ms.int32).reshape(1, keys) <= query_index.astype(ms.int32).reshape(-1, 1)
    return ops.logical_and(causal.reshape(1, 1, -1, keys), (key_valid != 0).reshape(key_valid.shape[0], 1, 1, keys))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return ops.cat((-x[..., half:], x[..., :half]), -1)


class GlmImageTextAttention(nn.Cell):
    def __init__(self, config: GlmImageTextConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.resolved_head_dim
        self.rotary_dim = config.rotary_dim
        self.scaling = self.head_dim ** -0.5
        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = Linear(hidden, self.num_heads * self.head_dim, bias=bias, dtype=dtype)
        self.k_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias, dtype=dtype)
        self.v_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias, dtype=dtype)
        self.o_proj = Linear(self.num_heads * self.head_dim, hidden, bias=False, dtype=dtype)

    def _rotary(self, x, cos, sin):
        """Rotate the first ``rotary_dim`` channels of (B, H, S, D); cos/sin are (B, S, rotary_dim)."""
        cos, sin = cos.expand_dims(1), sin.expand_dims(1)
        if self.rotary_dim == self.head_dim:
            return x * cos + _rotate_half(x) * sin
        rot, rest = x[..., :self.rotary_dim], x[..., self.rotary_dim:]
        return ops.cat((rot * cos + _rotate_half(rot) * sin, rest), -1)

    def construct(self, hidden, cos, sin, mask, cache_k=None, cache_v=None, write_index=None):
        """hidden (B, S, hidden); mask (B, 1, S, K) boolean with K = S, or K = max_len when a cache is given."""
        batch, seq, _ = hidden.shape
        q = self.q_proj(hidden).reshape(batch, seq, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = self.k_proj(hidden).reshape(batch, seq, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = self.v_proj(hidden).reshape(batch, seq, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        q = self._rotary(q, cos, sin)
        k = self._rotary(k, cos, sin)
        if cache_k is not None:
            k = ops.scatter_nd_update(cache_k, write_index, k)
            v = ops.scatter_nd_update(cache_v, write_index, v)
        # Query heads are grouped per KV head (head = kv * groups + g), so fold the groups into the query
        # rows instead of repeating K/V: no copy of the cache per step.
        groups = self.num_heads // self.num_kv_heads
        keys = k.shape[2]
        q = q.reshape(batch, self.num_kv_heads, groups * seq, self.head_dim)
        scores = mint.matmul(q, k.swapaxes(-1, -2)) * self.scaling
        scores = scores.reshape(batch, self.num_kv_heads, groups, seq, keys).astype(ms.float32)
        scores = ops.where(mask.expand_dims(2), scores, _MASKED)
        probs = ops.softmax(scores, -1).astype(hidden.dtype)
        out = mint.matmul(probs.reshape(batch, self.num_kv_heads, groups * seq, keys), v)
        out = out.reshape(batch, self.num_heads, seq, self.head_dim).transpose(0, 2, 1, 3)
        return self.o_proj(out.reshape(batch, seq, self.num_heads * self.head_dim))


class GlmImageTextMLP(nn.Cell):
    def __init__(self, config: GlmImageTextConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=False, dtype=dtype)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False, dtype=dtype)

    def construct(self, x):
        gate_up = self.gate_up_proj(x)
        gate, up = gate_up[..., :self.intermediate_size], gate_up[..., self.intermediate_size:]
        return self.down_proj(up * mint.nn.functional.silu(gate))


class GlmImageTextDecoderLayer(nn.Cell):
    def __init__(self, config: GlmImageTextConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        eps = config.rms_norm_eps
        self.self_attn = GlmImageTextAttention(config, dtype)
        self.mlp = GlmImageTextMLP(config, dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.post_self_attn_layernorm = RMSNorm(config.hidden_size, eps, dtype)
        self.post_mlp_layernorm = RMSNorm(config.hidden_size, eps, dtype)

    def construct(self, hidden, cos, sin, mask, cache_k=None, cache_v=None, write_index=None):
        attn = self.self_attn(self.input_layernorm(hidden), cos, sin, mask, cache_k, cache_v, write_index)
        hidden = hidden + self.post_self_attn_layernorm(attn)
        return hidden + self.post_mlp_layernorm(self.mlp(self.post_attention_layernorm(hidden)))


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
