"""Next-token selection inside the decode graph: ``TokenSampler``'s rules (temperature -> top-k -> top-p,
inverse-CDF draw, or argmax, ``sample_token``) and a decode step's bookkeeping around them (``sample_step``,
the operator), so a decode step returns token ids instead of logits."""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, ops


def sample_token(logits, uniforms, params, limit):
    """``logits`` (B, V), ``uniforms`` (B, 1), ``params`` (4,) float32 (temperature, top_k with 0 = off, top_p,
    1 to sample else argmax), ``limit`` (1,) int32: only ids below it can be picked (V: any id) ->
    token ids (B,) int32 and the number of non-finite logits per row (B,) int32."""
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
    return ops.where(params[3] > 0, sampled, greedy).astype(ms.int32), non_finite


def sample_step(logits, index, uniforms, params, limits, finished, flags, tokens, end_token_id: int):
    """One decode step's selection with its bookkeeping, so a sampled decode graph adds one operator, not ~25.

    Token ``index`` (1,) int32 of every row is ``sample_token``'s pick with uniform ``uniforms[:, index]``
    (uniforms (B, N)) among the ids below ``limits[index]`` (limits (N,) int32); a row already ``finished``
    (B,) int32 emits ``end_token_id``. Returns the token (B, 1) int32, ``finished`` updated (1 once a row
    emitted the end marker), ``flags`` (3,) int32 updated (1-based index of the first token whose logits had
    non-finite values, 0 while none; their count then; 1 when every row has finished) and ``tokens`` (B, N)
    int32 with column ``index`` written.
    """
    token, non_finite = sample_token(logits, ops.gather(uniforms, index, 1), params, ops.gather(limits, index, 0))
    token = ops.where(finished > 0, end_token_id, token).astype(ms.int32)
    finished = ops.logical_or(finished > 0, token == end_token_id).astype(ms.int32)
    bad = non_finite.sum().astype(ms.int32)
    first = ops.logical_and(flags[0] == 0, bad > 0)
    flags = ops.stack((ops.where(first, index[0] + 1, flags[0]), ops.where(first, bad, flags[1]),
                       finished.min().astype(ms.int32)))
    column = mint.arange(tokens.shape[1], dtype=ms.int32).reshape(1, -1) == index.reshape(1, 1)
    tokens = ops.where(column, token.reshape(-1, 1), tokens)
    return token.reshape(-1, 1), finished, flags, tokens
