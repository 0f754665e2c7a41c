"""The DiT denoising loop with classifier-free guidance, as GlmImagePipeline runs it.

Each step calls the DiT twice (conditional: glyph embeddings, prior tokens kept, reference-image KV
cache read; unconditional: negative embeddings, prior tokens dropped, cache skipped) with timestep
``t - 1``, mixes them with the guidance scale in fp32 and takes a flow-match Euler step on the host.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from mindspore import nn
from tqdm import tqdm

from ..finite import check_finite
from ..models.dit.kv_cache import GlmImageKVCache
from ..models.dit.transformer import transformer_inputs
from ..scheduler.flow_match import FlowMatchEulerScheduler, image_seq_len


@dataclasses.dataclass(frozen=True)
class DenoiseConfig:
    num_inference_steps: int = 50
    guidance_scale: float = 1.5
    vae_scale_factor: int = 8
    crop_coords: tuple[int, int] = (0, 0)
    progress: bool = True


def denoise(transformer: nn.Cell, scheduler: FlowMatchEulerScheduler, latents: np.ndarray, prior_ids: np.ndarray,
            glyph: np.ndarray, negative_glyph: np.ndarray | None, height: int, width: int,
            cfg: DenoiseConfig = DenoiseConfig(), kv_cache: GlmImageKVCache | None = None,
            glyph_mask: np.ndarray | None = None) -> np.ndarray:
    """Run the loop from initial noise ``latents`` (B, C, H/8, W/8); returns the final latents (float32).

    ``prior_ids`` (B, patches) are the upsampled AR tokens; ``negative_glyph`` may be None only when
    ``guidance_scale <= 1`` (no unconditional pass, as in the reference); ``glyph_mask`` (B, T) is False on
    the left padding of ``glyph`` (a batch of prompts whose quoted texts differ in length).
    """
    config = transformer.config
    guided = cfg.guidance_scale > 1
    if guided and negative_glyph is None:
        raise ValueError("guidance_scale > 1 needs negative glyph embeddings (encode the empty prompt)")
    latents = np.asarray(latents, dtype=np.float32)
    batch = latents.shape[0]
    timesteps = scheduler.set_timesteps(cfg.num_inference_steps,
                                        image_seq_len(height, width, cfg.vae_scale_factor, config.patch_size))
    target = np.tile(np.asarray([[height, width]], np.float32), (batch, 1))
    crop = np.tile(np.asarray([cfg.crop_coords], np.float32), (batch, 1))
    keep = np.zeros(prior_ids.shape, dtype=bool)
    drop = np.ones(prior_ids.shape, dtype=bool)
    cache_inputs = kv_cache.read_inputs(batch) if kv_cache is not None else ()
    for i, t in enumerate(tqdm(timesteps, desc="denoise", disable=not cfg.progress)):
        step_t = np.full(batch, t, dtype=np.float32) - np.float32(1)
        cond = transformer(*transformer_inputs(config, latents, glyph, prior_ids, keep, step_t, target, crop,
                                               glyph_mask), *cache_inputs).asnumpy().astype(np.float32)
        if guided:
            uncond = transformer(*transformer_inputs(config, latents, negative_glyph, prior_ids, drop, step_t, target,
                                                     crop)).asnumpy().astype(np.float32)
            velocity = uncond + np.float32(cfg.guidance_scale) * (cond - uncond)
        else:
            velocity = cond
        latents = check_finite(scheduler.step(velocity, i, latents),
                               f"denoising step {i + 1}/{len(timesteps)} (DiT velocity)")
    return latents
