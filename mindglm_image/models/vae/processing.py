"""Pipeline-side maths around the VAE, as GlmImagePipeline and VaeImageProcessor do it.

* The DiT works on normalised latents ``(z - latents_mean) / latents_std`` (per channel); the pipeline
  de-normalises before decoding and normalises the posterior mode of every encoded reference image.
* Decoded images live in [-1, 1]; the output image is ``clamp(x / 2 + 0.5, 0, 1)`` in NHWC layout.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np

from ...config.base import ConfigError
from ...config.vae import AutoencoderKLConfig


def latent_stats(config: AutoencoderKLConfig, dtype: ms.Type = ms.float32) -> tuple[ms.Tensor, ms.Tensor]:
    """Per-channel ``(mean, std)`` shaped (1, latent_channels, 1, 1) for broadcasting over latents."""
    if config.latents_mean is None or config.latents_std is None:
        raise ConfigError("vae config.json has no latents_mean/latents_std; GLM-Image needs both to map between "
                          "DiT latents and VAE latents: use the checkpoint's original vae/config.json")
    shape = (1, config.latent_channels, 1, 1)
    # float32 first (as the reference's torch.tensor of a list), then the latents' dtype
    mean = ms.Tensor(np.asarray(config.latents_mean, np.float32).reshape(shape)).astype(dtype)
    std = ms.Tensor(np.asarray(config.latents_std, np.float32).reshape(shape)).astype(dtype)
    return mean, std


def normalize_latents(latents: ms.Tensor, config: AutoencoderKLConfig) -> ms.Tensor:
    """VAE latents (e.g. ``vae.encode_mode(image)``) -> the DiT's latent space."""
    mean, std = latent_stats(config, latents.dtype)
    return (latents - mean) / std


def denormalize_latents(latents: ms.Tensor, config: AutoencoderKLConfig) -> ms.Tensor:
    """The DiT's final latents -> VAE latents ready for ``vae.decode``."""
    mean, std = latent_stats(config, latents.dtype)
    return latents * std + mean


def normalize_images(images: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1] -> [-1, 1], the VAE's input range."""
    return 2.0 * images - 1.0


def postprocess_images(images: ms.Tensor | np.ndarray) -> np.ndarray:
    """Decoded images (B, C, H, W) in about [-1, 1] -> float32 (B, H, W, C) in [0, 1].

    Computed in fp32 (the reference does it in the VAE's dtype before its own fp32 cast).
    """
    images = images.astype(ms.float32).asnumpy() if isinstance(images, ms.Tensor) else np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"postprocess_images: expected (batch, channels, height, width), got {images.shape}")
    return np.clip(images * np.float32(0.5) + np.float32(0.5), 0.0, 1.0).transpose(0, 2, 3, 1)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 pixels, rounding like diffusers' ``numpy_to_pil``."""
    return (images * 255).round().astype(np.uint8)
