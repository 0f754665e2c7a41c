"""AdamW with fp32 master weights, an EMA of the trained weights, global-norm clipping, and the LR schedule.

The maths is torch.optim.AdamW's (decoupled weight decay, bias-corrected moments) followed by
``torch.nn.utils.clip_grad_norm_``'s clipping before it and an EMA update after it. Scalars that depend
on the step (learning rate, bias corrections) are computed on the host in float64, as torch does, and
enter the compiled update as fp32 tensors, so one graph serves every step.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, mint, nn, ops

from .config import OptimizerConfig, ScheduleConfig


def learning_rate(step: int, peak: float, schedule: ScheduleConfig) -> float:
    """LR of optimizer step ``step`` (1-based): linear warmup to ``peak``, then cosine down to ``min_lr_ratio``."""
    if schedule.warmup_steps and step <= schedule.warmup_steps:
        return peak * step / schedule.warmup_steps
    if not schedule.cosine:
        return peak
    span = max(schedule.total_steps - schedule.warmup_steps, 1)
    progress = min((step - schedule.warmup_steps) / span, 1.0)
    floor = schedule.min_lr_ratio
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def step_scalars(step: int, lr: float, cfg: OptimizerConfig) -> tuple[Tensor, Tensor, Tensor]:
    """(lr, lr / (1 - beta1^step), sqrt(1 - beta2^step)) as fp32 tensors: the host-side half of AdamW."""
    beta1, beta2 = cfg.betas
    step_size = lr / (1.0 - beta1 ** step)
    bias2_sqrt = math.sqrt(1.0 - beta2 ** step)
    return tuple(Tensor(np.float32(v)) for v in (lr, step_size, bias2_sqrt))


def _fp32_copy(param: Parameter, prefix: str, zeros: bool) -> Parameter:
    value = np.zeros(param.shape, np.float32) if zeros else param.asnumpy().astype(np.float32)
    return Parameter(Tensor(value), name=f"{prefix}.{param.name}", requires_grad=False)


class AdamW(nn.Cell):
    """Optimizer state for ``params`` (any dtype) and the update ``construct(grads, lr, step_size, bias2_sqrt)``.

    State, all fp32: ``master`` (a copy only for non-fp32 params; fp32 params are their own master),
    ``exp_avg``, ``exp_avg_sq`` and ``ema``. Returns the global gradient norm before clipping; when it is
    not finite nothing is updated (the caller reports it), so a bad batch never writes NaNs into the state.
    """

    def __init__(self, params: list[Parameter], cfg: OptimizerConfig):
        super().__init__(auto_prefix=False)
        self.cfg = cfg
        self.params = ParameterTuple(params)
        self.masters = ParameterTuple([p if p.dtype == ms.float32 else _fp32_copy(p, "master", False) for p in params])
        self.exp_avg = ParameterTuple([_fp32_copy(p, "exp_avg", True) for p in params])
        self.exp_avg_sq = ParameterTuple([_fp32_copy(p, "exp_avg_sq", True) for p in params])
        self.use_ema = cfg.ema_decay > 0
        self.ema = ParameterTuple([_fp32_copy(p, "ema", False) for p in params] if self.use_ema else [])
        self.own_master = tuple(p.dtype != ms.float32 for p in params)
        self.beta1, self.beta2 = cfg.betas

    def state(self) -> dict[str, ParameterTuple]:
        """Every state tensor group by name (what a checkpoint stores besides the step)."""
        return {"master": self.masters, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "ema": self.ema}

    def construct(self, grads, lr, step_size, bias2_sqrt):
        # 1. global norm of all gradients (torch: norm of the per-tensor norms) and the clip coefficient
        # (sqrt of sums of squares: LinalgVectorNorm has no CPU kernel in MindSpore 2.10 inside a train graph)
        squares = [mint.sum(mint.square(g.astype(ms.float32))) for g in grads]
        total = mint.sqrt(mint.sum(ops.stack(squares)))
        finite = mint.isfinite(total)
        coef = Tensor(1.0, ms.float32)
        if self.cfg.max_grad_norm > 0:
            coef = mint.clamp(self.cfg.max_grad_norm / (total + 1e-6), max=1.0)
        decay = 1.0 - lr * self.cfg.weight_decay
        for i, grad in enumerate(grads):
            master, m, v = self.masters[i], self.exp_avg[i], self.exp_avg_sq[i]
            g = grad.astype(ms.float32) * coef
            # 2. AdamW: decoupled decay, moments (lerp form as torch's CPU kernel), bias-corrected step
            new_m = m + (g - m) * (1.0 - self.beta1)
            new_v = v * self.beta2 + g * g * (1.0 - self.beta2)
            denom = mint.sqrt(new_v) / bias2_sqrt + self.cfg.eps
            new_w = master * decay - step_size * (new_m / denom)
            # 3. write only finite results (a NaN/inf gradient leaves every state tensor as it was)
            ops.assign(m, mint.where(finite, new_m, m))
            ops.assign(v, mint.where(finite, new_v, v))
            new_w = mint.where(finite, new_w, master)
            ops.assign(master, new_w)
            if self.own_master[i]:
                ops.assign(self.params[i], new_w.astype(self.params[i].dtype))
            # 4. EMA of the fp32 weights
            if self.use_ema:
                ema = self.ema[i]
                ops.assign(ema, mint.where(finite, ema + (new_w - ema) * (1.0 - self.cfg.ema_decay), ema))
        return total
