"""The shared train step: any loss cell -> gradients of the trainable parameters -> AdamW + EMA.

``TrainStep`` itself is the micro-step graph (forward, backward, add the gradients to fp32 sums); its
``update`` cell is the optimizer-step graph (average the sums over micro-batches and, under data
parallelism, over workers with MindSpore's ``DistributedGradReducer``, then clip, AdamW, EMA, and
zero the sums). With ``optimizer_cfg.shard_state`` and several workers the optimizer state is sharded
(ZeRO stage 1, ``optim.StateShard``): each rank reduces the gradients to the mean of its own pieces,
updates those, and the optimizer all-gathers the full parameters; with ``shard_grads`` too (ZeRO-2) every
micro-step reduces its gradients to the pieces, so the fp32 sums are pieces as well. Loss cells only need
``construct(*batch_tensors) -> scalar fp32 loss``; which parameters train (all of a model, or LoRA factors
only) is the caller's choice.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, mint, nn, ops

from ..ops.registry import check_trainable
from .config import OptimizerConfig
from .optim import AdamW, StateShard, step_scalars


class _PieceMean(nn.Cell):
    """Gradients (full shapes) -> the mean over workers of this rank's flat piece of each (``optim.StateShard``)."""

    def __init__(self, shapes: list[tuple[int, ...]], shard: StateShard):
        super().__init__(auto_prefix=False)
        self.inv_world = 1.0 / shard.world
        self.sizes = tuple(shard.size(shape) for shape in shapes)
        self.pads = tuple(n * shard.world - int(np.prod(shape)) for n, shape in zip(self.sizes, shapes))
        self.starts = tuple(n * shard.rank for n in self.sizes)
        self.scatter = ms.get_context("device_target") == "Ascend"
        self.reduce_scatter, self.all_reduce = ops.ReduceScatter(ops.ReduceOp.SUM), ops.AllReduce()

    def construct(self, grads):
        pieces = []
        for i, g in enumerate(grads):
            flat = g.astype(ms.float32).reshape(-1)
            if self.pads[i]:
                flat = mint.cat((flat, mint.zeros(self.pads[i], dtype=flat.dtype)))
            if self.scatter:
                piece = self.reduce_scatter(flat)
            else:
                # the CPU backend has no ReduceScatter kernel (MindSpore 2.10: "Unsupported op [ReduceScatter]
                # on CPU"): all-reduce the whole gradient and keep this rank's piece of the sum, the same values
                piece = self.all_reduce(flat)[self.starts[i]:self.starts[i] + self.sizes[i]]
            pieces.append(piece * self.inv_world)
        return tuple(pieces)


class _ApplyUpdate(nn.Cell):
    """Optimizer-step graph: mean of the gradient sums (micro-batches, then workers), AdamW, zero the sums.

    Sharded state: the sums are reduced to this rank's pieces here (ZeRO-1), or already are those pieces
    (``shard_grads``, ZeRO-2: reduced in every micro-step)."""

    def __init__(self, grad_sums: ParameterTuple, optimizer: AdamW, grad_accum_steps: int, world_size: int,
                 reduce_sums: nn.Cell | None):
        super().__init__(auto_prefix=False)
        self.grad_sums = grad_sums
        self.optimizer = optimizer
        self.inv_steps = 1.0 / grad_accum_steps
        self.reduce_sums = reduce_sums
        self.reducer = None
        if optimizer.shard is None and world_size > 1:
            self.reducer = nn.DistributedGradReducer(grad_sums, mean=True, degree=world_size)

    def construct(self, lr, step_size, bias2_sqrt):
        grads = tuple(g * self.inv_steps for g in self.grad_sums)
        if self.reducer is not None:
            grads = self.reducer(grads)
        if self.reduce_sums is not None:
            grads = self.reduce_sums(grads)
        norm = self.optimizer(grads, lr, step_size, bias2_sqrt)
        for g in self.grad_sums:
            ops.assign(g, mint.zeros_like(g))
        return norm


class TrainStep(nn.Cell):
    """Train ``trainable_params`` of ``loss_cell``; call ``step(micro_batches, step, lr)`` once per optimizer step.
    ``rank`` of ``world_size`` data-parallel workers (the rank only matters with ``optimizer_cfg.shard_state``)."""

    def __init__(self, loss_cell: nn.Cell, trainable_params: Sequence[Parameter], optimizer_cfg: OptimizerConfig,
                 grad_accum_steps: int = 1, world_size: int = 1, rank: int = 0):
        super().__init__(auto_prefix=False)
        if not trainable_params:
            raise ValueError("TrainStep got no trainable parameters: nothing would be trained")
        check_trainable(loss_cell)
        self.loss_cell = loss_cell
        self.loss_cell.set_train(True)
        self.params = ParameterTuple(trainable_params)
        # graph-mode divergence: the optimizer graph unrolls its per-parameter loop (~9 nested calls a tensor with
        # the shard / master / EMA branches); MindSpore's default call-depth limit (1000) stops at ~100 tensors
        # (a whole VAE has 180)
        ms.set_recursion_limit(max(1000, 16 * len(trainable_params) + 200))
        # one worker has nothing to shard over: shard_state is then the plain (whole-state) optimizer
        shard = StateShard(rank, world_size) if optimizer_cfg.shard_state and world_size > 1 else None
        pieces = _PieceMean([p.shape for p in trainable_params], shard) if shard is not None else None
        # ZeRO-2: each micro-step reduces its gradients to this rank's pieces, so only those are summed
        self.piece_grads = pieces if shard is not None and optimizer_cfg.shard_grads else None
        sum_shapes = [(shard.size(p.shape),) if self.piece_grads is not None else p.shape for p in trainable_params]
        self.grad_sums = ParameterTuple([Parameter(Tensor(np.zeros(shape, np.float32)), name=f"grad_sum.{p.name}",
                                                   requires_grad=False)
                                         for shape, p in zip(sum_shapes, trainable_params)])
        self.value_and_grad = ops.value_and_grad(loss_cell, None, self.params)
        self.optimizer_cfg = optimizer_cfg
        self.grad_accum_steps = grad_accum_steps
        self.optimizer = AdamW(list(trainable_params), optimizer_cfg, shard)
        self.update = _ApplyUpdate(self.grad_sums, self.optimizer, grad_accum_steps, world_size,
                                   pieces if self.piece_grads is None else None)

    def construct(self, *batch):
        """One micro-batch: returns its loss and adds its gradients (fp32) to the sums."""
        loss, grads = self.value_and_grad(*batch)
        if self.piece_grads is not None:
            grads = self.piece_grads(grads)
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
