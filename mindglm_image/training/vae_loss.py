"""Training loss of the VAE (``AutoencoderKL``): reconstruction of a sampled latent plus a small KL term.

loss = mean|decode(z) - x| + kl_weight * mean(0.5 * (mu^2 + exp(logvar) - 1 - logvar)), with
z = mu + exp(logvar / 2) * noise drawn from the posterior (reparameterised, the noise is a batch input so
the step is a pure function of its inputs). L1 keeps the flat colours and hard edges of the demo
scenes sharp; the KL keeps the latent space smooth and near unit scale for the DiT. Both means run over
elements, so ``kl_weight`` does not depend on the image size.
"""
from __future__ import annotations

from collections.abc import Sequence

import mindspore as ms
import numpy as np
from mindspore import mint, nn

from ..models.vae.autoencoder_kl import LOGVAR_RANGE, AutoencoderKL
from ..models.vae.processing import normalize_images


class VAELoss(nn.Cell):
    """``construct(images (B, 3, H, W) in [-1, 1], noise (B, latent, H/f, W/f))`` -> scalar loss."""

    def __init__(self, vae: AutoencoderKL, kl_weight: float):
        super().__init__(auto_prefix=False)  # parameter names stay the VAE's own
        self.vae = vae
        self.kl_weight = kl_weight

    def construct(self, images, noise):
        # 1. posterior moments, as AutoencoderKL.encode computes them
        moments = self.vae.encoder(images)
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        mean, logvar = mint.chunk(moments, 2, 1)
        logvar = mint.clamp(logvar, LOGVAR_RANGE[0], LOGVAR_RANGE[1])
        # 2. reparameterised sample and its decoding
        latents = mean + mint.exp(0.5 * logvar) * noise
        recon = self.vae(latents)
        # 3. L1 reconstruction + weighted KL to N(0, 1)
        rec = mint.mean(mint.abs(recon.astype(ms.float32) - images.astype(ms.float32)))
        kl = mint.mean(0.5 * (mean * mean + mint.exp(logvar) - 1.0 - logvar))
        return rec + self.kl_weight * kl


def random_crops(pixels: Sequence[np.ndarray], crop: int, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """(B, 3, crop, crop) float32 in [-1, 1]: one random crop per uint8 (H, W, 3) image, from its own generator."""
    out = []
    for image, rng in zip(pixels, rngs):
        h, w = image.shape[:2]
        if crop > min(h, w):
            raise ValueError(f"vae_loss.crop={crop} exceeds the image size {h}x{w}; lower it or use larger images")
        top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        out.append(image[top:top + crop, left:left + crop].transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))
    return normalize_images(np.stack(out))


class VAEBatchMaker:
    """Image samples (``{"pixels": uint8 (H, W, 3)}``) -> ``VAELoss`` inputs: random crops and posterior noise."""

    def __init__(self, latent_channels: int, downscale: int, crop: int):
        if crop % downscale:
            raise ValueError(f"vae_loss.crop={crop} must be a multiple of the VAE's downscale factor {downscale}")
        self.latent_channels, self.downscale, self.crop = latent_channels, downscale, crop

    def __call__(self, samples: list[dict], rngs: list[np.random.Generator]) -> tuple:
        images = random_crops([s["pixels"] for s in samples], self.crop, rngs)
        side = self.crop // self.downscale
        noise = np.stack([rng.standard_normal((self.latent_channels, side, side), dtype=np.float32) for rng in rngs])
        return ms.Tensor(images), ms.Tensor(noise)
