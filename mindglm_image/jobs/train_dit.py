"""The DiT fine-tuning job (``mindglm-image train-dit``, ``scripts/train_dit.py`` under msrun).

Checks everything it can before any compute (paths, dataset against the model config, an existing
checkpoint against this model), builds the flow-matching loss cell on the model's transformer, and
hands it to the shared job runner (``jobs/training_job.py``). Full fine-tuning trains every transformer
parameter; with ``lora`` set, only the injected LoRA factors train (``training/lora.py``).
"""
from __future__ import annotations

from pathlib import Path

import mindspore as ms
import numpy as np

from ..config.base import ConfigError
from ..config.dit import GlmImageTransformerConfig
from ..models.glyph.glyph_encoder import GlyphEncoder
from ..processor.byt5_tokenizer import ByT5Tokenizer
from ..scheduler.flow_match import FlowMatchEulerScheduler
from ..training.config import DiTLossConfig, TrainConfig
from ..training.dit_loss import DiTBatchMaker, DiTFlowMatchLoss
from ..training.train_step import recompute_blocks
from ..training.trainer import TrainingDataset
from ..weights.components import COMPONENTS, load_component, load_config
from .training_job import check_lora, check_paths, job_runtime, open_dataset, run_job, trainable

_PARTS = ("transformer/config.json", "text_encoder/config.json", "tokenizer", "scheduler/scheduler_config.json")


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


def train_dit(cfg: TrainConfig, dataset: TrainingDataset | None = None, progress: bool = True) -> dict:
    """Run the job; ``dataset`` defaults to ``PreparedDataset(cfg.data)``. Returns the trainer's summary."""
    check_paths(cfg, _PARTS, need_data=dataset is None)
    lora = check_lora(cfg, "transformer")
    rank, world, dtype = job_runtime(cfg)
    dataset = open_dataset(cfg, dataset)
    model = Path(cfg.model)
    scheduler = FlowMatchEulerScheduler.from_folder(model / "scheduler")
    check_dataset(dataset, load_config(COMPONENTS["transformer"], model / "transformer"), scheduler)
    transformer = load_component(COMPONENTS["transformer"], model / "transformer", dtype)
    maker = DiTBatchMaker(transformer.config, scheduler, cfg.dit_loss, negative_glyph(model, dtype))
    params = trainable(transformer, lora, "transformer", list(transformer.get_parameters()))
    if cfg.recompute:
        recompute_blocks(transformer.transformer_blocks)
    return run_job(cfg, transformer, "transformer", DiTFlowMatchLoss(transformer), params, dataset, maker, rank,
                   world, progress)
