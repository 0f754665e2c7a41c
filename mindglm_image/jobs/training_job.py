"""What the training jobs (train-dit, train-ar) share: checks before any compute, runtime and
data-parallel setup, full or LoRA trainable parameters, the trainer run and the export at the end.

A job builds its model cell, loss cell and batch maker; everything else goes through here, so both
jobs resume, log, checkpoint and export the same way.
"""
from __future__ import annotations

import json
from pathlib import Path

import mindspore as ms
from mindspore import nn

from ..runtime import default_compute_dtype, setup_runtime
from ..training.checkpoint import model_fingerprint
from ..training.config import TrainConfig
from ..training.export import export_trained
from ..training.lora import DEFAULT_TARGETS, LoraConfig, inject_lora, lora_parameters, resolve_targets
from ..training.train_step import TrainStep
from ..training.trainer import BatchMaker, Trainer, TrainingDataset
from ..weights.components import COMPONENTS, build_cell, load_config
from .batch_generate import distributed_rank


def check_paths(cfg: TrainConfig, parts: tuple[str, ...], need_data: bool = True) -> None:
    """The model folder holds ``parts`` (what the job reads) and the data folder exists (before anything loads)."""
    model = Path(cfg.model)
    missing = [p for p in parts if not (model / p).exists()]
    if missing:
        raise FileNotFoundError(f"model folder {model} lacks {missing}: point 'model' at a GLM-Image model folder "
                                "(official layout or converted)")
    if need_data and not Path(cfg.data).is_dir():
        raise FileNotFoundError(f"data folder not found: {cfg.data}; run `mindglm-image prepare-data` to make it, "
                                "or fix 'data' in the job config")


def check_lora(cfg: TrainConfig, component: str) -> LoraConfig | None:
    """The job's LoRA config, its targets matched against a weightless build of ``component`` (no weight
    memory, no compute), so a target naming no module fails before the model loads."""
    if cfg.lora is None:
        return None
    lora = LoraConfig.from_dict(cfg.lora)
    spec = COMPONENTS[component]
    shapes = build_cell(spec, load_config(spec, Path(cfg.model) / component))
    resolve_targets(shapes, lora.target_modules if lora.target_modules is not None else DEFAULT_TARGETS[component])
    return lora


def job_runtime(cfg: TrainConfig) -> tuple[int, int, ms.Type]:
    """(rank, world size, compute dtype); under msrun the data-parallel context is set here."""
    device = setup_runtime(cfg.device)
    ms.set_seed(cfg.seed)  # initialisers (LoRA's A) draw the same values on every worker, and in every run
    rank, world = distributed_rank()
    if world > 1:  # data parallel: each worker reads its own shard; TrainStep all-reduces the gradients
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
    return rank, world, default_compute_dtype(device) if cfg.dtype == "auto" else getattr(ms, cfg.dtype)


def open_dataset(cfg: TrainConfig, dataset: TrainingDataset | None) -> TrainingDataset:
    if dataset is not None:
        return dataset
    from ..training.data import PreparedDataset

    return PreparedDataset(cfg.data)


def trainable(cell: nn.Cell, lora: LoraConfig | None, component: str, full: list) -> list:
    """``full`` (the parameters a full fine-tune trains) or, with LoRA, the injected factors only."""
    if lora is None:
        return full
    inject_lora(cell, lora, component)
    return lora_parameters(cell)


def run_job(cfg: TrainConfig, cell: nn.Cell, component: str, loss_cell: nn.Cell, params: list,
            dataset: TrainingDataset, make_batch: BatchMaker, rank: int, world: int, progress: bool) -> dict:
    """Train ``params`` of ``cell`` (the model ``component``) through ``loss_cell``, then (rank 0) export the
    result into ``cfg.out_dir``; returns the trainer's summary with ``export`` set to the written folder."""
    step = TrainStep(loss_cell, params, cfg.optimizer, cfg.grad_accum_steps, world, rank)
    fingerprint = {**model_fingerprint(step, {component: cell.config.to_dict(), "lora": cfg.lora}),
                   "component": component}  # what a standalone export (training/export.py) rebuilds
    summary = Trainer(cfg, step, dataset, make_batch, fingerprint, rank, world, progress).run()
    summary["optimizer_state_elements"] = step.optimizer.state_elements()  # this rank's (1/world with shard_state)
    summary["export"] = None
    if rank == 0:
        if cfg.export:
            summary["export"] = str(export_trained(cfg, cell, component, summary["checkpoint"]))
        print(json.dumps(summary), flush=True)
    return summary
