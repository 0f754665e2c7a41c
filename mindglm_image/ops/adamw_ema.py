"""Fused AdamW step plus the EMA of the weights (training): the composite definition and the AscendC op.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    p = p (1 - lr wd) - lr (m / bc1) / (sqrt(v / bc2) + eps);  ema = d ema + (1 - d) p

``step_scalars`` (3,) fp32 = [lr, bc1 = 1 - b1^t, bc2 = 1 - b2^t] is a tensor so that a schedule does not
recompile. Returns the new (param, exp_avg, exp_avg_sq, ema).
"""
from __future__ import annotations

from mindspore import ops


def adamw_ema(param, grad, exp_avg, exp_avg_sq, ema, step_scalars, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8, weight_decay: float = 0.01, ema_decay: float = 0.9999):
    lr, bc1, bc2 = step_scalars[0], step_scalars[1], step_scalars[2]
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    update = (exp_avg / bc1) / (ops.sqrt(exp_avg_sq / bc2) + eps)
    param = param * (1 - lr * weight_decay) - lr * update
    return param, exp_avg, exp_avg_sq, ema_decay * ema + (1 - ema_decay) * param
