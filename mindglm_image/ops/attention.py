"""Scaled dot-product attention: the one attention every cell calls (AR text and vision, DiT, T5).

Layout BNSD: query (B, Hq, S, d), key/value (B, Hkv, K, d) with Hq a multiple of Hkv (grouped-query:
query head ``kv * groups + g`` reads KV head ``kv``); or ``layout="BSND"``: (B, S, Hq, d), (B, K, Hkv, d)
in and out, the projections' own layout (the DiT), so the fused kernels move no heads at all. One mask
convention, in both layouts: an additive fp32 ``bias`` broadcastable to (B, Hq, S, K), 0 where a key is
attended and ``MASKED`` (fp32 min, exp() gives exactly 0) where it is not; relative-position biases (T5) use
the same argument. Scores and softmax are fp32.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import mint, ops

from .broadcast import broadcast_like
from .layout import heads_first, heads_second

MASKED = float(np.finfo(np.float32).min)  # additive bias of a key that must not be attended
_MATMUL_KT = ops.BatchMatMul(transpose_b=True)


def attention(query, key, value, scale: float, bias=None, layout: str = "BNSD"):
    """softmax(q k^T * scale + bias) v, shaped like the query, in its dtype."""
    if layout == "BSND":
        return heads_second(_attention_bnsd(heads_first(query), heads_first(key), heads_first(value), scale, bias))
    return _attention_bnsd(query, key, value, scale, bias)


def _attention_bnsd(query, key, value, scale: float, bias=None):
    batch, heads, seq, head_dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    if groups > 1:
        # fold the query groups into rows of their KV head instead of repeating K/V (no cache copy per step)
        query = query.reshape(batch, kv_heads, groups * seq, head_dim)
    # q k^T with the transpose inside the matmul: a Transpose kernel would keep an index per element (ops/layout.py)
    scores = _MATMUL_KT(query, key).astype(ms.float32) * scale
    if groups > 1:
        scores = scores.reshape(batch, kv_heads, groups, seq, keys)
        if bias is not None:
            bias = bias.expand_dims(2)  # (B, 1, S, K) -> (B, 1, 1, S, K): one bias for every query head
    if bias is not None:
        scores = scores + broadcast_like(bias, scores)
    probs = mint.nn.functional.softmax(scores, -1).astype(value.dtype)
    if groups > 1:
        probs = probs.reshape(batch, kv_heads, groups * seq, keys)
    return mint.matmul(probs, value).reshape(batch, heads, seq, head_dim)


def attention_ascend(query, key, value, scale: float, bias=None, layout: str = "BNSD"):
    """Ascend: ``ops.incre_flash_attention`` for one query token against the static KV cache (decode),
    ``ops.flash_attention_score`` otherwise (``input_layout`` BNSD or BSND as given); grouped KV heads
    native, fp32 softmax inside.

    The decode kernel takes a boolean discard mask, so the bias (a pure mask on that path: the AR cache
    mask) is turned into one; prefill passes the bias as ``real_shift`` (position shift added to scores).
    """
    if layout == "BSND":
        batch, seq, heads, _ = query.shape
        keys = key.shape[1]
        shift = None if bias is None else bias.broadcast_to((batch, heads, seq, keys)).astype(query.dtype)
        return ops.flash_attention_score(query, key, value, heads, real_shift=shift, scalar_value=scale,
                                         input_layout="BSND")
    batch, heads, seq, _ = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    if seq == 1 and bias is not None:
        discard = (bias <= MASKED * 0.5).broadcast_to((batch, 1, 1, keys)).astype(ms.bool_)
        return ops.incre_flash_attention(query, [key], [value], attn_mask=discard, num_heads=heads,
                                         input_layout="BNSD", scale_value=scale, num_key_value_heads=kv_heads)
    shift = None if bias is None else bias.broadcast_to((batch, heads, seq, keys)).astype(query.dtype)
    return ops.flash_attention_score(query, key, value, heads, real_shift=shift, scalar_value=scale,
                                     input_layout="BNSD")
