"""The DiT fine-tuning job (``mindglm-image train-dit``, ``scripts/train_dit.py`` under msrun).

Checks everything it can before any compute (paths, dataset against the model config, an existing
checkpoint against this model), builds the flow-matching loss cell on the model's transformer, and
hands it to the generic trainer. Full fine-tuning trains every transformer parameter; with ``lora``
set, only the injected LoRA factors train (``training/lora.py``).
"""
from __future__ import annotations

import json
from pathlib import Path

import mindspore as ms
import numpy as np

from ..config.base import ConfigError
from ..config.dit import GlmImageTransformerConfig
from ..models.glyph.glyph_encoder import GlyphEncoder
from ..processor.byt5_tokenizer import ByT5Tokenizer
from ..runtime import default_compute_dtype, setup_runtime
from ..scheduler.flow_match import FlowMatchEulerScheduler
from ..training.checkpoint import model_fingerprint
from ..training.config import DiTLossConfig, TrainConfig
from ..training.dit_loss import DiTBatchMaker, DiTFlowMatchLoss
from ..training.train_step import TrainStep, recompute_blocks
from ..training.trainer import Trainer, TrainingDataset
from ..weights.components import COMPONENTS, load_component, load_config
from .batch_generate import distributed_rank

_PARTS = ("transformer/config.json", "text_encoder/config.json", "tokenizer", "scheduler/scheduler_config.json")


def check_paths(cfg: TrainConfig, need_data: bool = True) -> None:
    """The model folder holds what DiT training reads and the data folder exists (before anything loads)."""
    model = Path(cfg.model)
    missing = [p for p in _PARTS if not (model / p).exists()]
    if missing:
        raise FileNotFoundError(f"model folder {model} lacks {missing}: point 'model' at a GLM-Image model folder "
                                "(official layout or converted)")
    if need_data and not Path(cfg.data).is_dir():
        raise FileNotFoundError(f"data folder not found: {cfg.data}; run `mindglm-image prepare-data` to make it, "
                                "or fix 'data' in the job config")


def check_dataset(dataset: TrainingDataset, config: GlmImageTransformerConfig, scheduler: FlowMatchEulerScheduler) -> None:
    """One sample of every aspect bucket goes through the batch maker's checks, and its prior ids through the
    codebook range, so a dataset prepared for another model fails here, not inside a compiled step."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: prepare it with at least one sample")
    codebook = config.prior_vq_quantizer_codebook_size
    maker = DiTBatchMaker(config, scheduler, DiTLossConfig(prior_drop_prob=0.0, glyph_drop_prob=0.0),
                          np.zeros((1, config.text_embed_dim), np.float32))
    rng = np.random.default_rng(0)
    for size, indices in sorted(dataset.buckets().items()):
        sample = dataset[indices[0]]
        try:
            maker([sample], [rng])
            ids = [np.asarray(v) for k, v in sample.items() if k == "prior_ids" or k.startswith("ref_prior_ids_")]
            if any(i.size and (i.min() < 0 or i.max() >= codebook) for i in ids):
                raise ValueError(f"prior ids outside the model's codebook of {codebook}")
        except (ValueError, KeyError) as err:
            raise ConfigError(f"sample {indices[0]} (bucket {size}) does not fit the model: {err}; the dataset was "
                              "prepared for another model, re-run prepare-data with this model") from err


def negative_glyph(model: Path, dtype: ms.Type) -> np.ndarray:
    """Glyph embeddings of "" (T0, text_embed_dim): what the pipeline's unconditional pass feeds the DiT."""
    encoder = load_component(COMPONENTS["text_encoder"], model / "text_encoder", dtype)
    glyph = GlyphEncoder(encoder, ByT5Tokenizer.from_pretrained(model / "tokenizer"))
    return glyph.encode([""]).astype(ms.float32).asnumpy()[0]


def _trainable(transformer, cfg: TrainConfig) -> list:
    if cfg.lora is None:
        return list(transformer.get_parameters())
    from ..training.lora import LoraConfig, inject_lora, lora_parameters

    inject_lora(transformer, LoraConfig.from_dict(cfg.lora), "transformer")
    return lora_parameters(transformer)


def train_dit(cfg: TrainConfig, dataset: TrainingDataset | None = None, progress: bool = True) -> dict:
    """Run the job; ``dataset`` defaults to ``PreparedDataset(cfg.data)``. Returns the trainer's summary."""
    check_paths(cfg, need_data=dataset is None)
    device = setup_runtime(cfg.device)
    rank, world = distributed_rank()
    if world > 1:  # data parallel: each worker reads its own shard; TrainStep all-reduces the gradients
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
    dtype = default_compute_dtype(device) if cfg.dtype == "auto" else getattr(ms, cfg.dtype)
    if dataset is None:
        from ..training.data import PreparedDataset

        dataset = PreparedDataset(cfg.data)
    model = Path(cfg.model)
    scheduler = FlowMatchEulerScheduler.from_folder(model / "scheduler")
    check_dataset(dataset, load_config(COMPONENTS["transformer"], model / "transformer"), scheduler)
    transformer = load_component(COMPONENTS["transformer"], model / "transformer", dtype)
    maker = DiTBatchMaker(transformer.config, scheduler, cfg.dit_loss, negative_glyph(model, dtype))
    params = _trainable(transformer, cfg)
    if cfg.recompute:
        recompute_blocks(transformer.transformer_blocks)
    step = TrainStep(DiTFlowMatchLoss(transformer), params, cfg.optimizer, cfg.grad_accum_steps, world)
    fingerprint = model_fingerprint(step, {"transformer": transformer.config.to_dict(), "lora": cfg.lora})
    summary = Trainer(cfg, step, dataset, maker, fingerprint, rank, world, progress).run()
    if rank == 0:
        print(json.dumps(summary), flush=True)
    return summary
