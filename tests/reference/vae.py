"""Reference fixture for the VAE: a tiny random diffusers AutoencoderKL, its encode/decode outputs and the
GlmImagePipeline latent (de)normalisation + VaeImageProcessor post-processing around it."""
from __future__ import annotations

import numpy as np
import torch
from common import out_dir, save_arrays, seed_all
from diffusers import AutoencoderKL
from diffusers.image_processor import VaeImageProcessor

LATENT = 16


def randomise(model: torch.nn.Module) -> None:
    """Perturb every parameter (norms included) so no default value hides a mismatch."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "norm" in name:
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.add_(0.1 * p.std() * torch.randn_like(p))


def main() -> None:
    out = out_dir()
    seed_all(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 64), layers_per_block=1, latent_channels=LATENT, norm_num_groups=8,
        latents_mean=[round(float(v), 4) for v in 0.3 * np.random.randn(LATENT)],
        latents_std=[round(float(v), 4) for v in 0.5 + np.random.rand(LATENT)],
    ).eval()
    randomise(vae)
    vae.save_pretrained(out / "vae", max_shard_size="50KB")

    images = torch.rand(2, 3, 32, 48) * 2 - 1
    latents = torch.randn(2, LATENT, 4, 6)
    dit_latents = torch.randn(2, LATENT, 4, 6)
    cfg = vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, LATENT, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, LATENT, 1, 1)
    processor = VaeImageProcessor(vae_scale_factor=2 ** (len(cfg.block_out_channels) - 1))
    with torch.no_grad():
        posterior = vae.encode(images).latent_dist
        decoded = vae.decode(latents).sample
        # GlmImagePipeline: reference image -> argmax latent -> normalised; final latents -> de-normalised -> decode
        cond_latents = (posterior.mode() - mean) / std
        vae_latents = dit_latents * std + mean
        pipe_decoded = vae.decode(vae_latents, return_dict=False)[0]
        pipe_image = processor.postprocess(pipe_decoded, output_type="np")
    pixels = np.random.rand(2, 3, 8, 12).astype(np.float32)
    save_arrays(out / "vae.npz", images=images, latents=latents, dit_latents=dit_latents,
                mean=posterior.mean, logvar=posterior.logvar, decoded=decoded,
                cond_latents=cond_latents, vae_latents=vae_latents, pipe_decoded=pipe_decoded, pipe_image=pipe_image,
                pipe_uint8=(pipe_image * 255).round().astype("uint8"),
                pixels=pixels, pixels_normalized=processor.normalize(pixels))


if __name__ == "__main__":
    main()
