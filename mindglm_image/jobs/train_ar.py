"""The AR SFT job (``mindglm-image train-ar``, ``scripts/train_ar.py`` under msrun).

Next-token cross-entropy on the image tokens of prepared samples (``training/ar_loss.py``), on the same
shared job runner as the DiT job (``jobs/training_job.py``): resumable checkpoints, metrics, data
parallel, export. Full SFT trains the text decoder and the head; with ``lora`` set (default targets
q_proj/k_proj/v_proj/o_proj), only the injected LoRA factors train.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config.ar import GlmImageConfig
from ..config.base import ConfigError
from ..training.ar_loss import ARSFTLoss, ar_trainable_parameters, collate_ar
from ..training.config import TrainConfig
from ..training.train_step import recompute_blocks
from ..training.trainer import TrainingDataset
from ..weights.components import COMPONENTS, load_component, load_config
from .training_job import check_lora, check_paths, job_runtime, open_dataset, run_job, trainable

COMPONENT = "vision_language_encoder"
_PARTS = (f"{COMPONENT}/config.json",)
_KEYS = ("ar_input_ids", "ar_labels", "ar_image_grid_thw")
#: batches are padded to a multiple of this many tokens: every distinct sequence length is a new graph
#: compile (seconds each, and the compiled graphs pile up in memory), while prompt lengths vary by a few tokens
LENGTH_MULTIPLE = 64


def check_dataset(dataset: TrainingDataset, config: GlmImageConfig) -> None:
    """One sample of every aspect bucket is batched as training batches it (positions rebuilt) and its ids
    checked against the vocabulary, so a dataset prepared for another model fails before the model loads."""
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: prepare it with at least one sample")
    vocab = config.text_config.vocab_size
    for size, indices in sorted(dataset.buckets().items()):
        sample = dataset[indices[0]]
        try:
            missing = [k for k in _KEYS if k not in sample]
            if missing:
                raise KeyError(f"no {missing}")
            ids = np.asarray(sample["ar_input_ids"])
            if ids.min() < 0 or ids.max() >= vocab:
                raise ValueError(f"token ids outside the model's vocabulary of {vocab}")
            collate_ar([sample], config)
        except (ValueError, KeyError) as err:
            raise ConfigError(f"sample {indices[0]} (bucket {size}) does not fit the AR model: {err}; re-run "
                              "prepare-data with this model") from err


def train_ar(cfg: TrainConfig, dataset: TrainingDataset | None = None, progress: bool = True) -> dict:
    """Run the job; ``dataset`` defaults to ``PreparedDataset(cfg.data)``. Returns the trainer's summary."""
    check_paths(cfg, _PARTS, need_data=dataset is None)
    lora = check_lora(cfg, COMPONENT)
    rank, world, dtype = job_runtime(cfg)
    dataset = open_dataset(cfg, dataset)
    folder = Path(cfg.model) / COMPONENT
    check_dataset(dataset, load_config(COMPONENTS[COMPONENT], folder))
    model = load_component(COMPONENTS[COMPONENT], folder, dtype)
    params = trainable(model, lora, COMPONENT, ar_trainable_parameters(model))
    if cfg.recompute:
        recompute_blocks(model.model.language_model.layers)

    def make_batch(samples: list[dict], rngs: list[np.random.Generator]) -> tuple:
        return collate_ar(samples, model.config, multiple=LENGTH_MULTIPLE)  # no randomness in the AR loss

    return run_job(cfg, model, COMPONENT, ARSFTLoss(model), params, dataset, make_batch, rank, world, progress)
