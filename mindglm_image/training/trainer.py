"""The training loop: dataset -> aspect-bucket batches -> ``TrainStep``, sharded over workers, resumable.

The data order is a pure function of (seed, epoch): each epoch shuffles every aspect bucket, cuts it
into global micro-batches of ``batch_size * world_size`` samples (a bucket's remainder waits for the
next epoch's shuffle) and shuffles the batch order; worker ``r`` takes slice ``r`` of every global
micro-batch. Each sample's randomness comes from its own generator keyed by (seed, epoch, sample), so
one worker with a batch of 2B draws exactly what two workers with B each draw, and a checkpoint's data
position (epoch, next micro-batch) is all the RNG state there is.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from ..weights.safetensors_io import CheckpointError
from .checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .metrics import SUMMARY_FILE, MetricsLogger
from .optim import learning_rate
from .train_step import TrainStep


class TrainingDataset(Protocol):
    """What the trainer reads (``training.data.PreparedDataset`` or any in-memory equivalent)."""

    def __len__(self) -> int: ...
    def buckets(self) -> dict[tuple[int, ...], list[int]]: ...
    def __getitem__(self, index: int) -> dict: ...


#: samples of one micro-batch and one generator per sample -> the loss cell's inputs
BatchMaker = Callable[[list[dict], list[np.random.Generator]], tuple]


def epoch_plan(buckets: dict[tuple[int, ...], list[int]], global_batch: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Global micro-batches (arrays of dataset indices) of one epoch, in training order."""
    rng = np.random.default_rng([seed, epoch])
    chunks = []
    for key in sorted(buckets):
        perm = rng.permutation(np.asarray(buckets[key], dtype=np.int64))
        chunks += [perm[j:j + global_batch] for j in range(0, len(perm) - global_batch + 1, global_batch)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


class Trainer:
    """Runs ``cfg.schedule.total_steps`` optimizer steps of ``train_step`` on ``dataset``, resuming from the
    newest checkpoint in ``cfg.out_dir`` when there is one. Only rank 0 writes files."""

    def __init__(self, cfg: TrainConfig, train_step: TrainStep, dataset: TrainingDataset, make_batch: BatchMaker,
                 fingerprint: dict[str, str], rank: int = 0, world_size: int = 1, progress: bool = True):
        self.cfg, self.train_step, self.dataset, self.make_batch = cfg, train_step, dataset, make_batch
        self.fingerprint, self.rank, self.world_size, self.progress = fingerprint, rank, world_size, progress
        self.global_batch = cfg.batch_size * world_size
        if train_step.grad_accum_steps != cfg.grad_accum_steps:
            raise ValueError(f"TrainStep accumulates {train_step.grad_accum_steps} micro-batches but the config "
                             f"says grad_accum_steps={cfg.grad_accum_steps}")
        if len(dataset) == 0:
            raise ValueError(f"the dataset {cfg.data} is empty: prepare it with samples first")
        self.buckets = dataset.buckets()
        if not epoch_plan(self.buckets, self.global_batch, cfg.seed, 0):
            sizes = {key: len(v) for key, v in sorted(self.buckets.items())}
            raise ValueError(f"no aspect bucket holds a full global batch of {self.global_batch} samples (batch_size "
                             f"{cfg.batch_size} x {world_size} workers); bucket sizes {sizes}: lower batch_size")

    def _resume(self) -> dict:
        """State of the newest checkpoint (loaded into the train step), or a fresh state."""
        state = {"step": 0, "epoch": 0, "position": 0, "samples": 0}
        found = list_checkpoints(self.cfg.out_dir)
        if not found:
            return state
        loaded = load_checkpoint(found[-1], self.train_step, self.fingerprint)
        geometry = (self.global_batch, self.cfg.grad_accum_steps, self.cfg.seed)
        if tuple(loaded["geometry"]) != geometry:
            raise CheckpointError(f"{found[-1]} was trained with (global batch, grad_accum_steps, seed) = "
                                  f"{tuple(loaded['geometry'])}, this job has {geometry}; resume with the same values "
                                  "or start in a new out_dir")
        return {k: loaded[k] for k in state}

    def _micro_batches(self, state: dict) -> list[tuple]:
        """The next ``grad_accum_steps`` micro-batches of this worker; advances the data position."""
        plan = epoch_plan(self.buckets, self.global_batch, self.cfg.seed, state["epoch"])
        out = []
        for _ in range(self.cfg.grad_accum_steps):
            if state["position"] >= len(plan):
                state["epoch"], state["position"] = state["epoch"] + 1, 0
                plan = epoch_plan(self.buckets, self.global_batch, self.cfg.seed, state["epoch"])
            chunk = plan[state["position"]]
            state["position"] += 1
            mine = chunk[self.rank * self.cfg.batch_size:(self.rank + 1) * self.cfg.batch_size]
            rngs = [np.random.default_rng([self.cfg.seed, state["epoch"], int(i)]) for i in mine]
            out.append(self.make_batch([self.dataset[int(i)] for i in mine], rngs))
        state["samples"] += self.global_batch * self.cfg.grad_accum_steps
        return out

    def run(self) -> dict:
        cfg = self.cfg
        state = self._resume()
        start_step, total = state["step"], cfg.schedule.total_steps
        finished = Path(cfg.out_dir) / SUMMARY_FILE
        if start_step >= total and finished.is_file():
            # a rerun of a finished job changes nothing: report the run that finished it
            return json.loads(finished.read_text(encoding="utf-8"))
        logger = MetricsLogger(cfg.out_dir, total, start_step, enabled=self.rank == 0, progress=self.progress)
        checkpoint = list_checkpoints(cfg.out_dir)[-1] if start_step else None
        started = time.perf_counter()
        loss = None  # no step run yet
        try:
            while state["step"] < total:
                tick = time.perf_counter()
                batches = self._micro_batches(state)
                step = state["step"] + 1
                lr = learning_rate(step, cfg.optimizer.lr, cfg.schedule)
                loss, norm = self.train_step.step(batches, step, lr)
                if not (np.isfinite(loss) and np.isfinite(norm)):
                    raise FloatingPointError(
                        f"step {step}: non-finite loss {loss} or gradient norm {norm}; this step changed nothing and "
                        f"the last checkpoint is {checkpoint}; lower the learning rate or check the data")
                state["step"] = step
                seconds = time.perf_counter() - tick
                if step % cfg.log_every == 0 or step == total:
                    logger.log(step, loss=loss, lr=lr, grad_norm=norm, epoch=state["epoch"],
                               samples_per_s=self.global_batch * cfg.grad_accum_steps / seconds)
                if step % cfg.checkpoint_every == 0 or step == total:
                    checkpoint = checkpoint_dir(cfg.out_dir, step)
                    # every worker takes part (a sharded optimizer state is gathered from all); rank 0 writes
                    save_checkpoint(cfg.out_dir, self.train_step,
                                    {**state, "geometry": [self.global_batch, cfg.grad_accum_steps, cfg.seed],
                                     "fingerprint": self.fingerprint, "config": cfg.to_dict()}, cfg.keep_last,
                                    write=self.rank == 0)
        finally:
            elapsed = time.perf_counter() - started
            done = state["step"] - start_step
            summary = {"steps": state["step"], "steps_this_run": done, "seconds": round(elapsed, 3),
                       "samples_per_s": round(done * self.global_batch * cfg.grad_accum_steps / elapsed, 3) if done else 0.0,
                       "final_loss": loss, "checkpoint": str(checkpoint) if checkpoint else None,
                       "rank": self.rank, "world_size": self.world_size}
            logger.close(summary if state["step"] == total else None)
        return summary
