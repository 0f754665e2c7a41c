"""Fused AdamW step plus the EMA of the weights (training): the composite definition.

torch.optim.AdamW's CPU arithmetic (the form the trainer's parity with torch autograd needs), then the EMA:

    m = m + (g - m) (1 - b1);  v = b2 v + (1 - b2) g^2
    p = p (1 - lr wd) - step_size m / (sqrt(v) / bias2_sqrt + eps);  ema = ema + (p - ema) (1 - d)

``step_scalars`` (3,) fp32 = [lr, step_size = lr / (1 - b1^t), bias2_sqrt = sqrt(1 - b2^t)], computed on the
host in float64 (``training/optim.step_scalars``) and passed as a tensor so that a schedule never recompiles.
The betas, eps, weight decay and EMA decay are attributes (fixed per optimizer: compile-time constants of the
AscendC kernel, ``ops/ascendc.AdamWEmaAscendC``). Returns the new (param, exp_avg, exp_avg_sq, ema).
"""
from __future__ import annotations

from mindspore import mint, nn


class AdamWEma(nn.Cell):
    """The composite update; the registry builds it (or its AscendC twin) with the optimizer's attributes."""

    def __init__(self, beta1: float, beta2: float, eps: float, weight_decay: float, ema_decay: float):
        super().__init__()
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.weight_decay, self.ema_decay = weight_decay, ema_decay

    def construct(self, param, grad, exp_avg, exp_avg_sq, ema, step_scalars):
        lr, step_size, bias2_sqrt = step_scalars[0], step_scalars[1], step_scalars[2]
        # 1. moments (the lerp form of torch's CPU kernel for the first)
        exp_avg = exp_avg + (grad - exp_avg) * (1.0 - self.beta1)
        exp_avg_sq = exp_avg_sq * self.beta2 + grad * grad * (1.0 - self.beta2)
        # 2. decoupled weight decay and the bias-corrected step
        denom = mint.sqrt(exp_avg_sq) / bias2_sqrt + self.eps
        param = param * (1.0 - lr * self.weight_decay) - step_size * (exp_avg / denom)
        # 3. EMA of the updated weights
        return param, exp_avg, exp_avg_sq, ema + (param - ema) * (1.0 - self.ema_decay)
