"""The VAE training job (``mindglm-image train-vae``): ``AutoencoderKL`` from pixels, on the shared job runner.

Trains every VAE parameter on random crops of the dataset's images (``training/vae_loss.py``), resumable
and exported like the DiT and AR jobs (``jobs/training_job.py``). The exported ``vae/config.json`` gets
the per-channel ``latents_mean``/``latents_std`` of the trained encoder's posterior modes over the
training images: the pipeline maps between VAE and DiT latents with them, so the DiT trains on
unit-scale latents.
"""
from __future__ import annotations

import json
from pathlib import Path

import mindspore as ms
import numpy as np

from ..atomic import write_json_atomic
from ..config.base import ConfigError
from ..models.vae.autoencoder_kl import AutoencoderKL
from ..models.vae.processing import normalize_images
from ..training.config import TrainConfig
from ..training.image_data import ImageDataset
from ..training.trainer import TrainingDataset
from ..training.vae_loss import VAEBatchMaker, VAELoss
from ..weights.components import COMPONENTS, load_component
from .training_job import check_paths, job_runtime, run_job

COMPONENT = "vae"
#: images whose latents give the exported latents_mean/latents_std
STATS_IMAGES = 256


def check_image_job(cfg: TrainConfig, parts: tuple[str, ...], dataset: TrainingDataset | None) -> None:
    """What the pixel jobs (train-vae, train-vq) check before any compute: the model parts, the data path, no LoRA."""
    check_paths(cfg, parts, need_data=False)
    if dataset is None and not Path(cfg.data).exists():
        raise FileNotFoundError(f"dataset not found: {cfg.data}; point 'data' at a .jsonl of images (e.g. the "
                                "train.jsonl of `mindglm-image make-demo-data`) or a folder of images")
    if cfg.lora is not None:
        raise ConfigError("this job trains its component from scratch: LoRA is for train-dit and train-ar; "
                          "remove 'lora' from the job config")


def latent_statistics(vae: AutoencoderKL, dataset: TrainingDataset, count: int = STATS_IMAGES) -> tuple[list, list]:
    """Per-channel mean and std of the posterior modes of the first ``count`` images (one at a time)."""
    modes = []
    for i in range(min(count, len(dataset))):
        pixels = dataset[i]["pixels"].transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)
        modes.append(vae.encode_mode(normalize_images(pixels)).astype(ms.float32).asnumpy())
    flat = np.concatenate([m.transpose(1, 0, 2, 3).reshape(m.shape[1], -1) for m in modes], axis=1)
    return flat.mean(1).round(6).tolist(), np.maximum(flat.std(1), 1e-6).round(6).tolist()


def train_vae(cfg: TrainConfig, dataset: TrainingDataset | None = None, progress: bool = True) -> dict:
    """Run the job; ``dataset`` defaults to ``ImageDataset(cfg.data)``. Returns the trainer's summary."""
    check_image_job(cfg, (f"{COMPONENT}/config.json",), dataset)
    rank, world, dtype = job_runtime(cfg)
    dataset = ImageDataset(cfg.data) if dataset is None else dataset
    vae = load_component(COMPONENTS[COMPONENT], Path(cfg.model) / COMPONENT, dtype)
    maker = VAEBatchMaker(vae.config.latent_channels, vae.config.downscale_factor, cfg.vae_loss.crop)
    maker([dataset[0]], [np.random.default_rng(0)])  # a crop larger than the images fails here, not in the graph
    summary = run_job(cfg, vae, COMPONENT, VAELoss(vae, cfg.vae_loss.kl_weight), list(vae.get_parameters()),
                      dataset, maker, rank, world, progress)
    if summary["export"]:  # the export loaded the exported weights into ``vae``
        config_file = Path(summary["export"]) / COMPONENT / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["latents_mean"], config["latents_std"] = latent_statistics(vae, dataset)
        write_json_atomic(config_file, config)
    return summary
