"""msrun worker of tests/test_shard_state.py: the same toy training on every rank with the optimizer state
whole (``DistributedGradReducer``), sharded (``shard_state``) and sharded with the gradient sums
(``shard_grads``), side by side in one process.

    msrun --worker_num=2 ... tests/shard_state_worker.py OUT_DIR

Prints one JSON line per rank: its state sizes, the largest difference of every state group between the whole
and each sharded run, and whether a sharded run resumed from a checkpoint continues bit-exactly.
"""
from __future__ import annotations

import json
import sys

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops

from mindglm_image.jobs.training_job import job_runtime
from mindglm_image.training.checkpoint import load_checkpoint, save_checkpoint
from mindglm_image.training.config import OptimizerConfig, ScheduleConfig, TrainConfig
from mindglm_image.training.optim import learning_rate
from mindglm_image.training.train_step import TrainStep

#: odd sizes (each needs padding to split over 2 ranks) and one fp16 tensor (a low-precision weight)
SHAPES = {"w": ((5, 3), ms.float32), "b": ((7,), ms.float32), "h": ((3, 3), ms.float16)}
CFG = {"lr": 0.05, "weight_decay": 0.1, "ema_decay": 0.8, "max_grad_norm": 0.5}  # the clipping is active


class ToyLoss(nn.Cell):
    """sum over tensors of mean((p * x - t)^2): per-element gradients that differ between samples."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        for name, (shape, dtype) in SHAPES.items():
            setattr(self, name, Parameter(Tensor(rng.standard_normal(shape), dtype), name=name))

    def construct(self, x_w, t_w, x_b, t_b, x_h, t_h):
        loss = mint.mean(mint.square(self.w * x_w - t_w)) + mint.mean(mint.square(self.b * x_b - t_b))
        return loss + mint.mean(mint.square(self.h.astype(ms.float32) * x_h - t_h))


def batches(rank: int, step: int) -> list[tuple]:
    """Two micro-batches of this rank for optimizer step ``step``."""
    out = []
    for micro in range(2):
        rng = np.random.default_rng([rank, step, micro])
        out.append(tuple(Tensor(rng.standard_normal(shape).astype(np.float32)) for shape, _ in SHAPES.values()
                         for _ in range(2)))
    return out


def make_step(rank: int, world: int, **shard: bool) -> TrainStep:
    cell = ToyLoss()
    return TrainStep(cell, list(cell.get_parameters()), OptimizerConfig.from_dict({**CFG, **shard}),
                     grad_accum_steps=2, world_size=world, rank=rank)


def train(step: TrainStep, rank: int, steps: range) -> None:
    for n in steps:
        step.step(batches(rank, n), n, learning_rate(n, CFG["lr"], ScheduleConfig(total_steps=4)))


def full_state(step: TrainStep) -> dict[str, np.ndarray]:
    """Every state tensor at full size (gathered from all ranks when sharded), and the parameters."""
    opt = step.optimizer
    out = {f"param/{p.name}": p.asnumpy().astype(np.float32) for p in step.params}
    for group, tensors in opt.state().items():
        for i, t in enumerate(tensors):
            out[f"{group}/{step.params[i].name}"] = opt.full_value(t, i)
    return out


def main(out_dir: str) -> None:
    rank, world, _ = job_runtime(TrainConfig(model="toy", data="toy", device="CPU"))
    whole, sharded = make_step(rank, world), make_step(rank, world, shard_state=True)
    zero2 = make_step(rank, world, shard_state=True, shard_grads=True)
    for step in (whole, sharded, zero2):
        train(step, rank, range(1, 4))
    a = full_state(whole)
    diff = {name: {k: float(np.abs(a[k] - b[k]).max()) for k in a}
            for name, b in (("shard_state", full_state(sharded)), ("shard_grads", full_state(zero2)))}
    # checkpoint the sharded run at step 3 (full layout, rank 0 writes), resume a fresh sharded run from it,
    # and take both one step further
    save_checkpoint(out_dir, sharded, {"step": 3, "fingerprint": {}}, keep_last=1, write=rank == 0)
    ops.AllReduce()(Tensor([1.0]))  # a barrier (CPU has no Barrier kernel): the file is complete before any read
    resumed = make_step(rank, world, shard_state=True)
    folder = f"{out_dir}/checkpoints/step-00000003"
    load_checkpoint(folder, resumed, {})
    train(sharded, rank, range(4, 5))
    train(resumed, rank, range(4, 5))
    c, d = full_state(sharded), full_state(resumed)
    print(json.dumps({"rank": rank, "world": world, "state_elements": [whole.optimizer.state_elements(),
                      sharded.optimizer.state_elements()],
                      "piece_shapes": {p.name: list(t.shape) for p, t in zip(sharded.params, sharded.optimizer.exp_avg)},
                      "grad_sum_shapes": [[list(t.shape) for t in s.grad_sums] for s in (sharded, zero2)],
                      "max_diff": diff, "resumed_equal": all(np.array_equal(c[k], d[k]) for k in c)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
