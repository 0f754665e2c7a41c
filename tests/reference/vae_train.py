"""Reference fixture for VAE training: the VAELoss (L1 reconstruction of a reparameterised posterior sample +
kl_weight * element-mean KL) and every parameter gradient by torch autograd on a tiny diffusers AutoencoderKL."""
# fixture-depends: tests/reference/vae.py
import torch
from common import out_dir, save_arrays, seed_all
from diffusers import AutoencoderKL
from vae import randomise

LATENT = 4
KL_WEIGHT = 0.01


def main() -> None:
    out = out_dir()
    seed_all(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32), layers_per_block=1, latent_channels=LATENT, norm_num_groups=8,
        latents_mean=[0.0] * LATENT, latents_std=[1.0] * LATENT,
    )
    randomise(vae)
    vae.save_pretrained(out / "vae", max_shard_size="50KB")
    images = torch.rand(2, 3, 16, 24) * 2 - 1
    noise = torch.randn(2, LATENT, 8, 12)
    # the loss written in torch: posterior moments -> z = mean + std * noise -> decode -> L1 + weighted KL
    moments = vae.quant_conv(vae.encoder(images))
    mean, logvar = torch.chunk(moments, 2, dim=1)
    logvar = torch.clamp(logvar, -30.0, 20.0)
    recon = vae.decode(mean + torch.exp(0.5 * logvar) * noise).sample
    kl = (0.5 * (mean ** 2 + torch.exp(logvar) - 1.0 - logvar)).mean()
    loss = (recon - images).abs().mean() + KL_WEIGHT * kl
    loss.backward()
    grads = {f"grad/{name}": p.grad for name, p in vae.named_parameters()}
    save_arrays(out / "vae_train.npz", images=images, noise=noise, loss=loss, kl_weight=torch.tensor(KL_WEIGHT), **grads)


if __name__ == "__main__":
    main()
