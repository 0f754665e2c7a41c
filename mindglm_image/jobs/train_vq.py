"""The image tokenizer job (``mindglm-image train-vq``): the AR model's ``visual`` + ``vqmodel`` as a VQ
autoencoder with an auxiliary pixel head (``training/vq_loss.py``), on the shared job runner.

Images are tokenised at each pixel size of ``vq_loss.sizes`` (the generator's full and preview grids),
preprocessed exactly as the pipeline preprocesses them. The export is the whole AR model folder with the
trained encoder, quantizer and ``post_quant_conv``; the auxiliary head is training-only and dropped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..processor.image_processing import GlmImageImageProcessorConfig
from ..training.config import TrainConfig
from ..training.image_data import ImageDataset
from ..training.trainer import TrainingDataset
from ..training.vq_loss import VQBatchMaker, VQLoss
from ..weights.components import COMPONENTS, load_component
from .train_vae import check_image_job
from .training_job import job_runtime, run_job

COMPONENT = "vision_language_encoder"


def train_vq(cfg: TrainConfig, dataset: TrainingDataset | None = None, progress: bool = True) -> dict:
    """Run the job; ``dataset`` defaults to the images of ``cfg.data`` at every size of ``vq_loss.sizes``."""
    check_image_job(cfg, (f"{COMPONENT}/config.json", "processor"), dataset)
    image_config = GlmImageImageProcessorConfig.from_pretrained(Path(cfg.model) / "processor")
    patch = image_config.patch_size
    bad = [s for s in cfg.vq_loss.sizes if s % patch]
    if bad:
        raise ValueError(f"vq_loss.sizes {bad} are not multiples of the vision patch size {patch}")
    rank, world, dtype = job_runtime(cfg)
    if dataset is None:
        dataset = ImageDataset(cfg.data, [(s, s) for s in cfg.vq_loss.sizes])
    model = load_component(COMPONENTS[COMPONENT], Path(cfg.model) / COMPONENT, dtype)
    maker = VQBatchMaker(model.config, image_config, cfg.vq_loss.target_side)
    maker([dataset[0]], [np.random.default_rng(0)])  # a size or target_side that does not fit fails here
    loss = VQLoss(model, cfg.vq_loss.target_side, cfg.vq_loss.commitment, cfg.seed)
    vision = model.model.visual, model.model.vqmodel
    params = [p for cell in vision for p in cell.get_parameters()] + loss.head_parameters()
    return run_job(cfg, model, COMPONENT, loss, params, dataset, maker, rank, world, progress)
