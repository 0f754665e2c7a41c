"""The DiT denoising loop with classifier-free guidance, as GlmImagePipeline runs it.

Each step calls the DiT twice (conditional: glyph embeddings, prior tokens kept, reference-image KV
cache read; unconditional: negative embeddings, prior tokens dropped, cache skipped) with timestep
``t - 1``, mixes them with the guidance scale in fp32 and takes a flow-match Euler step on the host.

Both passes get their glyph embeddings left-padded with zeros to one bucketed length, the padding masked
out of attention: they then share one compiled DiT graph, and so do prompts of similar length. (CPU
graph mode keeps every intermediate buffer of a compiled graph alive for its reuse: ~2 GB per graph for
a 4-block, 1024-wide DiT at 512 px, see scripts/bench_memory.py; one graph per prompt length and pass
grew without bound.) Masked keys get exactly zero weight, so results equal the unpadded ones up to
float summation order (~1e-7).
"""
from __future__ import annotations

import dataclasses

import mindspore as ms
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
    text_bucket: int = 32         # glyph token counts are padded (masked) up to a multiple of this


def pad_glyph(embeddings, mask: np.ndarray | None, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad (B, T, D) glyph embeddings with zeros to ``length`` tokens; the mask (B, length) is False on
    all padding (``mask`` None: none of the T tokens was padding)."""
    emb = (embeddings.astype(ms.float32).asnumpy() if isinstance(embeddings, ms.Tensor)
           else np.asarray(embeddings, np.float32))
    batch, tokens, _ = emb.shape
    keep = np.ones((batch, tokens), bool) if mask is None else np.asarray(mask, bool)
    pad = length - tokens
    return np.pad(emb, ((0, 0), (pad, 0), (0, 0))), np.pad(keep, ((0, 0), (pad, 0)))


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
    longest = max(glyph.shape[1], negative_glyph.shape[1] if guided else 0)
    text_len = -(-longest // cfg.text_bucket) * cfg.text_bucket if cfg.text_bucket else longest
    glyph, glyph_mask = pad_glyph(glyph, glyph_mask, text_len)
    if guided:
        negative_glyph, negative_mask = pad_glyph(negative_glyph, None, text_len)
    for i, t in enumerate(tqdm(timesteps, desc="denoise", disable=not cfg.progress)):
        step_t = np.full(batch, t, dtype=np.float32) - np.float32(1)
        cond = transformer(*transformer_inputs(config, latents, glyph, prior_ids, keep, step_t, target, crop,
                                               glyph_mask), *cache_inputs).asnumpy().astype(np.float32)
        if guided:
            uncond = transformer(*transformer_inputs(config, latents, negative_glyph, prior_ids, drop, step_t, target,
                                                     crop, negative_mask)).asnumpy().astype(np.float32)
            velocity = uncond + np.float32(cfg.guidance_scale) * (cond - uncond)
        else:
            velocity = cond
        latents = check_finite(scheduler.step(velocity, i, latents),
                               f"denoising step {i + 1}/{len(timesteps)} (DiT velocity)")
    return latents
