"""Synthetic checkpoints in the official layout: real parameter names and file layout, tiny random tensors.

Names and shapes come from our own cells built from a small config (they equal the reference's), so no
PyTorch is needed; values are random bf16, like the official checkpoint's dtype.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mindglm_image.weights.components import COMPONENTS, build_cell
from mindglm_image.weights.safetensors_io import TensorData, write_safetensors

TINY_VAE = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.42.1", "in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "block_out_channels": [32, 64],
            "layers_per_block": 1, "latent_channels": 16, "norm_num_groups": 8,
            "latents_mean": [0.0] * 16, "latents_std": [1.0] * 16}


def write_component(folder: Path, name: str, config: dict, dtype: str = "BF16", shards: int = 3, seed: int = 0) -> dict:
    """Write ``folder/name`` with config.json and ``shards`` safetensors shards + index; returns the tensors."""
    spec = COMPONENTS[name]
    part = folder / name
    part.mkdir(parents=True, exist_ok=True)
    (part / "config.json").write_text(json.dumps(config, indent=2))
    cell = build_cell(spec, spec.config_class().from_dict(config))
    rng = np.random.default_rng(seed)
    tensors = [TensorData.from_array(n, rng.standard_normal(p.shape).astype(np.float32), dtype)
               for n, p in cell.parameters_dict().items()]
    groups = np.array_split(np.arange(len(tensors)), shards)
    weight_map = {}
    for i, idx in enumerate(groups, 1):
        fname = f"{spec.hf_stem}-{i:05d}-of-{shards:05d}.safetensors"
        write_safetensors(part / fname, [tensors[j] for j in idx], metadata={"format": "pt"})
        weight_map.update({tensors[j].name: fname for j in idx})
    (part / f"{spec.hf_stem}.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}))
    return {t.name: t for t in tensors}


def write_model_folder(folder: Path, dtype: str = "BF16", seed: int = 0) -> dict:
    """A model folder with model_index.json, a sharded vae/ and a scheduler/ to copy."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "GlmImagePipeline", "_diffusers_version": "0.42.1",
        "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}))
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "FlowMatchEulerDiscreteScheduler"}))
    return write_component(folder, "vae", TINY_VAE, dtype, seed=seed)
