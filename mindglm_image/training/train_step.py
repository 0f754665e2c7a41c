"""The shared train step: any loss cell -> gradients of the trainable parameters -> AdamW + EMA.

``TrainStep`` itself is the micro-step graph (forward, backward, add the gradients to fp32 sums); its
``update`` cell is the optimizer-step graph (average the sums over micro-batches and, under data
parallelism, over workers with MindSpore's ``DistributedGradReducer``, then clip, AdamW, EMA, and
zero the sums). Loss cells only need ``construct(*batch_tensors) -> scalar fp32 loss``; which
parameters train (all of a model, or LoRA factors only) is the caller's choice.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, mint, nn, ops

from .config import OptimizerConfig
from .optim import AdamW, step_scalars


class _ApplyUpdate(nn.Cell):
    """Optimizer-step graph: mean of the gradient sums (micro-batches, then workers), AdamW, zero the sums."""

    def __init__(self, grad_sums: ParameterTuple, optimizer: AdamW, grad_accum_steps: int, world_size: int):
        super().__init__(auto_prefix=False)
        self.grad_sums = grad_sums
        self.optimizer = optimizer
        self.inv_steps = 1.0 / grad_accum_steps
        self.reducer = nn.DistributedGradReducer(grad_sums, mean=True, degree=world_size) if world_size > 1 else None

    def construct(self, lr, step_size, bias2_sqrt):
        grads = tuple(g * self.inv_steps for g in self.grad_sums)
        if self.reducer is not None:
            grads = self.reducer(grads)
        norm = self.optimizer(grads, lr, step_size, bias2_sqrt)
        for g in self.grad_sums:
            ops.assign(g, mint.zeros_like(g))
        return norm


class TrainStep(nn.Cell):
    """Train ``trainable_params`` of ``loss_cell``; call ``step(micro_batches, step, lr)`` once per optimizer step."""

    def __init__(self, loss_cell: nn.Cell, trainable_params: Sequence[Parameter], optimizer_cfg: OptimizerConfig,
                 grad_accum_steps: int = 1, world_size: int = 1):
        super().__init__(auto_prefix=False)
        if not trainable_params:
            raise ValueError("TrainStep got no trainable parameters: nothing would be trained")
        self.loss_cell = loss_cell
        self.loss_cell.set_train(True)
        self.params = ParameterTuple(trainable_params)
        # graph-mode divergence: the optimizer graph unrolls its per-parameter loop, ~6 nested calls a tensor;
        # MindSpore's default call-depth limit (1000) stops at ~160 tensors (a whole VAE has 180)
        ms.set_recursion_limit(max(1000, 8 * len(trainable_params) + 200))
        self.grad_sums = ParameterTuple([Parameter(Tensor(np.zeros(p.shape, np.float32)), name=f"grad_sum.{p.name}",
                                                   requires_grad=False) for p in trainable_params])
        self.value_and_grad = ops.value_and_grad(loss_cell, None, self.params)
        self.optimizer_cfg = optimizer_cfg
        self.grad_accum_steps = grad_accum_steps
        self.optimizer = AdamW(list(trainable_params), optimizer_cfg)
        self.update = _ApplyUpdate(self.grad_sums, self.optimizer, grad_accum_steps, world_size)

    def construct(self, *batch):
        """One micro-batch: returns its loss and adds its gradients (fp32) to the sums."""
        loss, grads = self.value_and_grad(*batch)
        for total, grad in zip(self.grad_sums, grads):
            ops.assign_add(total, grad.astype(ms.float32))
        return loss

    def step(self, micro_batches: Sequence[tuple], step: int, lr: float) -> tuple[float, float]:
        """Run ``grad_accum_steps`` micro-batches and one optimizer step (1-based ``step``); returns (mean
        loss, global gradient norm before clipping). A non-finite norm means nothing was updated."""
        if len(micro_batches) != self.grad_accum_steps:
            raise ValueError(f"got {len(micro_batches)} micro-batches for grad_accum_steps={self.grad_accum_steps}")
        losses = [float(self(*batch).asnumpy()) for batch in micro_batches]
        norm = float(self.update(*step_scalars(step, lr, self.optimizer_cfg)).asnumpy())
        return float(np.mean(losses)), norm


def recompute_blocks(blocks: Iterable[nn.Cell]) -> None:
    """Activation checkpointing: keep only each block's inputs in forward and recompute the rest in backward."""
    for block in blocks:
        block.recompute()
