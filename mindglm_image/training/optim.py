"""AdamW with fp32 master weights, an EMA of the trained weights, global-norm clipping, and the LR schedule.

The maths is torch.optim.AdamW's (decoupled weight decay, bias-corrected moments) followed by
``torch.nn.utils.clip_grad_norm_``'s clipping before it and an EMA update after it. Scalars that depend
on the step (learning rate, bias corrections) are computed on the host in float64, as torch does, and
enter the compiled update as fp32 tensors, so one graph serves every step.

With a ``StateShard`` (ZeRO stage 1, ``OptimizerConfig.shard_state`` under data parallelism) each rank keeps
the state of one 1/world piece of every parameter, runs the same update on its pieces, and all-gathers
the updated pieces into the full parameters.
"""
from __future__ import annotations

import dataclasses
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, mint, nn, ops

from ..ops.registry import resolve
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


@dataclasses.dataclass(frozen=True)
class StateShard:
    """The piece of every trained parameter whose optimizer state rank ``rank`` of ``world`` keeps.

    A parameter is flattened and zero-padded to a multiple of ``world``; rank r owns elements
    [r * n, (r + 1) * n) with n = ceil(numel / world). Flattening (rather than splitting dim 0) gives every
    rank exactly 1/world of every tensor whatever its shape (a bias of 3 over 8 ranks, a vocabulary that 8
    does not divide), and the pieces are exactly what ReduceScatter yields and AllGather concatenates on
    dim 0. The padding is zero in gradients, so it stays zero in every state tensor and never reaches a weight.
    """

    rank: int
    world: int

    def size(self, shape: tuple[int, ...]) -> int:
        """Elements of one piece of a parameter of ``shape``."""
        return -(-int(np.prod(shape)) // self.world)

    def piece(self, array: np.ndarray) -> np.ndarray:
        """This rank's piece of a full (host) array."""
        n = self.size(array.shape)
        flat = np.zeros(n * self.world, array.dtype)
        flat[:array.size] = array.reshape(-1)
        return flat[self.rank * n:(self.rank + 1) * n]

    @staticmethod
    def unpiece(gathered: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The full array from the all-gathered pieces (drop the padding, restore the shape)."""
        return gathered[:int(np.prod(shape))].reshape(shape)


def _fp32_copy(param: Parameter, prefix: str, zeros: bool, shard: StateShard | None) -> Parameter:
    value = np.zeros(param.shape, np.float32) if zeros else param.asnumpy().astype(np.float32)
    if shard is not None:
        value = shard.piece(value)
    return Parameter(Tensor(value), name=f"{prefix}.{param.name}", requires_grad=False)


class AdamW(nn.Cell):
    """Optimizer state for ``params`` (any dtype) and the update ``construct(grads, lr, step_size, bias2_sqrt)``.

    State, all fp32: ``master`` (a copy only for non-fp32 params; fp32 params are their own master),
    ``exp_avg``, ``exp_avg_sq`` and ``ema``. Returns the global gradient norm before clipping; when it is
    not finite nothing is updated (the caller reports it), so a bad batch never writes NaNs into the state.
    With ``shard`` every state tensor (a master too, whatever the dtype) is this rank's flat piece, ``grads``
    are the pieces of the worker-mean gradients, and the full parameters are all-gathered after the update.
    """

    def __init__(self, params: list[Parameter], cfg: OptimizerConfig, shard: StateShard | None = None):
        super().__init__(auto_prefix=False)
        self.cfg = cfg
        self.shard = shard
        self.params = ParameterTuple(params)
        self.masters = ParameterTuple([p if p.dtype == ms.float32 and shard is None else
                                       _fp32_copy(p, "master", False, shard) for p in params])
        self.exp_avg = ParameterTuple([_fp32_copy(p, "exp_avg", True, shard) for p in params])
        self.exp_avg_sq = ParameterTuple([_fp32_copy(p, "exp_avg_sq", True, shard) for p in params])
        self.use_ema = cfg.ema_decay > 0
        self.ema = ParameterTuple([_fp32_copy(p, "ema", False, shard) for p in params] if self.use_ema else [])
        self.own_master = tuple(m is not p for m, p in zip(self.masters, params))
        # the AdamW + EMA update of one tensor: the ops layer's (composite, or AscendC AdamWEma on Ascend)
        beta1, beta2 = cfg.betas
        self.update = resolve("adamw_ema", beta1=beta1, beta2=beta2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                              ema_decay=cfg.ema_decay).fn
        self.sharded = shard is not None
        if self.sharded:
            self.all_reduce, self.all_gather = ops.AllReduce(), ops.AllGather()
            self.numels = tuple(int(np.prod(p.shape)) for p in params)
            # the pieces travel in the parameter's dtype (bf16 halves the traffic on Ascend); the CPU backend's
            # AllGather has no bf16 kernel (MindSpore 2.10), so there they travel as fp32 and are cast after
            cpu = ms.get_context("device_target") == "CPU"
            self.gather_dtypes = tuple(ms.float32 if cpu else p.dtype for p in params)

    def state_elements(self) -> int:
        """fp32 elements this rank's optimizer holds besides the parameters (what sharding divides)."""
        own = [m for m, mine in zip(self.masters, self.own_master) if mine]
        return sum(int(np.prod(t.shape)) for t in [*own, *self.exp_avg, *self.exp_avg_sq, *self.ema])

    def full_value(self, tensor: Parameter, index: int) -> np.ndarray:
        """The full fp32 value of state tensor ``tensor`` (of parameter ``index``) on the host. Sharded, it is
        all-gathered, so every rank must call this for the same tensors in the same order."""
        if not self.sharded:
            return tensor.asnumpy()
        gathered = self.all_gather(tensor).asnumpy()  # eager: one tensor at a time, never the whole state
        return StateShard.unpiece(gathered, self.params[index].shape)

    def load_value(self, tensor: Parameter, array: np.ndarray) -> None:
        """Set state tensor ``tensor`` from its full value (this rank's piece of it when sharded)."""
        value = array if self.shard is None else self.shard.piece(array)
        tensor.set_data(Tensor(np.array(value, np.float32), ms.float32))  # a copy: ``array`` may map the file

    def state(self) -> dict[str, ParameterTuple]:
        """Every state tensor group by name (what a checkpoint stores besides the step)."""
        return {"master": self.masters, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "ema": self.ema}

    def construct(self, grads, lr, step_size, bias2_sqrt):
        # 1. global norm of all gradients (torch: norm of the per-tensor norms) and the clip coefficient
        # (sqrt of sums of squares: LinalgVectorNorm has no CPU kernel in MindSpore 2.10 inside a train graph)
        squares = ops.stack([mint.sum(mint.square(g.astype(ms.float32))) for g in grads])
        if self.sharded:  # each rank squared its pieces only: the sum over ranks is the same norm on every rank
            squares = self.all_reduce(squares)
        total = mint.sqrt(mint.sum(squares))
        finite = mint.isfinite(total)
        coef = Tensor(1.0, ms.float32)
        if self.cfg.max_grad_norm > 0:
            coef = mint.clamp(self.cfg.max_grad_norm / (total + 1e-6), max=1.0)
        scalars = ops.stack([lr, step_size, bias2_sqrt])
        for i, grad in enumerate(grads):
            master, m, v = self.masters[i], self.exp_avg[i], self.exp_avg_sq[i]
            # 2. AdamW (decoupled decay, bias-corrected moments) and the EMA, one fused update per tensor
            # (without EMA the master stands in for it and the result is dropped)
            ema = self.ema[i] if self.use_ema else master
            new_w, new_m, new_v, new_ema = self.update(master, grad.astype(ms.float32) * coef, m, v, ema, scalars)
            # 3. write only finite results (a NaN/inf gradient leaves every state tensor as it was)
            ops.assign(m, mint.where(finite, new_m, m))
            ops.assign(v, mint.where(finite, new_v, v))
            new_w = mint.where(finite, new_w, master)
            ops.assign(master, new_w)
            param = self.params[i]
            if self.sharded:  # every rank's updated piece -> the full parameter on every rank
                full = self.all_gather(new_w.astype(self.gather_dtypes[i]))[:self.numels[i]]
                ops.assign(param, full.reshape(param.shape).astype(param.dtype))
            elif self.own_master[i]:
                ops.assign(param, new_w.astype(param.dtype))
            if self.use_ema:
                ops.assign(ema, mint.where(finite, new_ema, ema))
        return total
