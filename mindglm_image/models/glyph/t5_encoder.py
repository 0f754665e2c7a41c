"""T5 encoder (``T5EncoderModel``) used as the Glyph-byT5 text encoder.

Parameter names equal the reference ``state_dict`` keys as ``save_pretrained`` writes them: the token
table is stored once as ``shared.weight`` (the reference ties ``encoder.embed_tokens`` to it and drops
the copy), so this cell holds that single parameter and the stack receives embeddings.
Relative position buckets depend only on the sequence length; they are computed on the host
(``relative_position_bucket``) and fed to the cell, which keeps the graph free of shape logic.
T5's norm is ``layers.RMSNorm``: the reference casts the normed states to the weight's dtype, which is
the activation dtype here because every parameter shares ``dtype`` (the reference keeps ``wo`` in fp32
only for fp16, which this port rejects). Scores, bias and softmax are fp32 and cast back.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import mint, nn

from ...config.t5 import T5Config
from ...ops import resolve
from ...ops.attention import MASKED
from ..layers import Embedding, Linear, RMSNorm

_SQRT_HALF = math.sqrt(0.5)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def relative_position_bucket(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 bucket of every (query, key) pair of a ``length`` sequence, int32 (length, length).

    Half the buckets per direction; distances below a quarter of ``num_buckets`` get their own bucket,
    longer ones share log-spaced buckets up to ``max_distance``. The log term is evaluated in float32
    like the reference so that distances on a bucket boundary land in the same bucket.
    """
    if length < 1:
        raise ValueError(f"relative_position_bucket: length={length} must be at least 1")
    positions = np.arange(length, dtype=np.int64)
    relative = positions[None, :] - positions[:, None]
    half = num_buckets // 2
    max_exact = half // 2
    distance = np.abs(relative)
    scaled = (np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
              / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact))
    large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    bucket = (relative > 0).astype(np.int64) * half + np.where(distance < max_exact, distance, large)
    return bucket.astype(np.int32)


class _Activation(nn.Cell):
    """The feed-forward nonlinearity named by the config (resolved when the graph compiles).

    Written out from elementwise ops: the fused GeLU kernels are not available on CPU.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def construct(self, x):
        if self.name == "relu":
            return mint.nn.functional.relu(x)
        if self.name == "silu":
            return x * mint.sigmoid(x)
        if self.name == "gelu":
            return 0.5 * x * (1.0 + mint.erf(x * _SQRT_HALF))
        # 0.5 * (1 + tanh(z)) == sigmoid(2z); CPU tanh is a coarse approximation (~1e-4), sigmoid is not.
        return x * mint.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))


class T5DenseActDense(nn.Cell):
    def __init__(self, config: T5Config, dtype: ms.Type):
        super().__init__()
        self.wi = Linear(config.d_model, config.d_ff, bias=False, dtype=dtype)
        self.wo = Linear(config.d_ff, config.d_model, bias=False, dtype=dtype)
        self.act = _Activation(config.dense_act_fn)

    def construct(self, x):
        return self.wo(self.act(self.wi(x)))


class T5DenseGatedActDense(nn.Cell):
    def __init__(self, config: T5Config, dtype: ms.Type):
        super().__init__()
        self.wi_0 = Linear(config.d_model, config.d_ff, bias=False, dtype=dtype)
        self.wi_1 = Linear(config.d_model, config.d_ff, bias=False, dtype=dtype)
        self.wo = Linear(config.d_ff, config.d_model, bias=False, dtype=dtype)
        self.act = _Activation(config.dense_act_fn)

    def construct(self, x):
        return self.wo(self.act(self.wi_0(x)) * self.wi_1(x))


class T5LayerFF(nn.Cell):
    def __init__(self, config: T5Config, dtype: ms.Type):
        super().__init__()
        dense = T5DenseGatedActDense if config.is_gated_act else T5DenseActDense
        self.DenseReluDense = dense(config, dtype)
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon, dtype=dtype)

    def construct(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Attention(nn.Cell):
    """Unscaled multi-head attention; the additive ``bias`` carries relative positions and the key mask."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, dtype: ms.Type):
        super().__init__()
        self.n_heads = config.num_heads
        self.d_kv = config.d_kv
        inner = config.num_heads * config.d_kv
        self.q = Linear(config.d_model, inner, bias=False, dtype=dtype)
        self.k = Linear(config.d_model, inner, bias=False, dtype=dtype)
        self.v = Linear(config.d_model, inner, bias=False, dtype=dtype)
        self.o = Linear(inner, config.d_model, bias=False, dtype=dtype)
        if has_relative_attention_bias:
            self.relative_attention_bias = Embedding(config.relative_attention_num_buckets, config.num_heads, dtype=dtype)
        self.attention = resolve("attention").fn

    def compute_bias(self, bucket):
        """(L, L) bucket ids -> (1, heads, L, L) fp32 bias; only the first block owns the table."""
        values = self.relative_attention_bias(bucket).astype(ms.float32)
        return values.permute(2, 0, 1).unsqueeze(0)

    def _heads(self, x, b, length):
        return mint.transpose(x.reshape(b, length, self.n_heads, self.d_kv), 1, 2)

    def construct(self, x, bias):
        b, length, _ = x.shape
        q = self._heads(self.q(x), b, length)
        k = self._heads(self.k(x), b, length)
        v = self._heads(self.v(x), b, length)
        out = mint.transpose(self.attention(q, k, v, 1.0, bias), 1, 2)
        return self.o(out.reshape(b, length, self.n_heads * self.d_kv))


class T5LayerSelfAttention(nn.Cell):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool, dtype: ms.Type):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias, dtype)
        self.layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon, dtype=dtype)

    def construct(self, x, bias):
        return x + self.SelfAttention(self.layer_norm(x), bias)


class T5Block(nn.Cell):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool, dtype: ms.Type):
        super().__init__()
        self.layer = nn.CellList([T5LayerSelfAttention(config, has_relative_attention_bias, dtype),
                                  T5LayerFF(config, dtype)])

    def construct(self, x, bias):
        return self.layer[1](self.layer[0](x, bias))


class T5Stack(nn.Cell):
    """Encoder blocks sharing the first block's position bias, then the final norm."""

    def __init__(self, config: T5Config, dtype: ms.Type):
        super().__init__()
        self.block = nn.CellList([T5Block(config, i == 0, dtype) for i in range(config.num_layers)])
        self.final_layer_norm = RMSNorm(config.d_model, eps=config.layer_norm_epsilon, dtype=dtype)

    def construct(self, inputs_embeds, attention_mask, position_bucket):
        bias = self.block[0].layer[0].SelfAttention.compute_bias(position_bucket)
        key_mask = (1.0 - attention_mask.astype(ms.float32)) * MASKED
        bias = bias + key_mask[:, None, None, :]
        x = inputs_embeds
        for block in self.block:
            x = block(x, bias)
        return self.final_layer_norm(x)


class T5EncoderModel(nn.Cell):
    """``(input_ids (B, L) int, attention_mask (B, L) 0/1, position_bucket (L, L) int32) -> (B, L, d_model)``.

    ``position_bucket`` is ``relative_position_bucket(L, config.relative_attention_num_buckets,
    config.relative_attention_max_distance)`` (see ``position_bucket_for``).
    """

    def __init__(self, config: T5Config, dtype: ms.Type = ms.float32):
        super().__init__()
        if dtype == ms.float16:
            raise ValueError("T5EncoderModel: float16 overflows in T5's feed-forward (the reference keeps `wo` in "
                             "fp32 and clamps infs); use float32 or bfloat16")
        self.config = config
        self.shared = Embedding(config.vocab_size, config.d_model, dtype=dtype)
        self.encoder = T5Stack(config, dtype)

    def position_bucket_for(self, length: int) -> ms.Tensor:
        """Host-side bucket tensor for a sequence of ``length`` tokens, to pass to the cell."""
        return ms.Tensor(relative_position_bucket(length, self.config.relative_attention_num_buckets,
                                                  self.config.relative_attention_max_distance))

    def construct(self, input_ids, attention_mask, position_bucket):
        return self.encoder(self.shared(input_ids), attention_mask, position_bucket)
