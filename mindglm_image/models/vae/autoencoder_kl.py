"""AutoencoderKL: images (B, 3, H, W) in [-1, 1] <-> latents (B, latent_channels, H/f, W/f).

Parameter names equal diffusers' ``AutoencoderKL`` state_dict keys. Calling the cell decodes (one graph);
``encode`` is a second compiled graph returning the diagonal Gaussian's mean and clamped log-variance.
Latent (de)normalisation and image post-processing live in ``processing.py``.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import mint, nn

from ...config.vae import AutoencoderKLConfig
from ...graph_inputs import graph_input
from ..layers import Conv2d, GroupNorm
from .blocks import NORM_EPS, DownEncoderBlock2D, UNetMidBlock2D, UpDecoderBlock2D

#: diffusers' DiagonalGaussianDistribution clamps the log-variance to this range
LOGVAR_RANGE = (-30.0, 20.0)


class Encoder(nn.Cell):
    """Pixels -> 2 * latent_channels maps (mean and log-variance stacked on the channel axis)."""

    def __init__(self, config: AutoencoderKLConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        channels = config.block_out_channels
        groups = config.norm_num_groups
        self.conv_in = Conv2d(config.in_channels, channels[0], 3, padding=1, dtype=dtype)
        self.down_blocks = nn.CellList([
            DownEncoderBlock2D(channels[max(i - 1, 0)], channels[i], config.layers_per_block, groups,
                               add_downsample=i < len(channels) - 1, dtype=dtype)
            for i in range(len(channels))
        ])
        self.mid_block = UNetMidBlock2D(channels[-1], groups, config.mid_block_add_attention, dtype)
        self.conv_norm_out = GroupNorm(groups, channels[-1], NORM_EPS, dtype=dtype)
        self.conv_out = Conv2d(channels[-1], 2 * config.latent_channels, 3, padding=1, dtype=dtype)

    def construct(self, x):
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(mint.nn.functional.silu(self.conv_norm_out(x)))


class Decoder(nn.Cell):
    """Latents -> pixels; each up block has one resnet more than the encoder's blocks."""

    def __init__(self, config: AutoencoderKLConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        channels = tuple(reversed(config.block_out_channels))
        groups = config.norm_num_groups
        self.conv_in = Conv2d(config.latent_channels, channels[0], 3, padding=1, dtype=dtype)
        self.mid_block = UNetMidBlock2D(channels[0], groups, config.mid_block_add_attention, dtype)
        self.up_blocks = nn.CellList([
            UpDecoderBlock2D(channels[max(i - 1, 0)], channels[i], config.layers_per_block + 1, groups,
                             add_upsample=i < len(channels) - 1, dtype=dtype)
            for i in range(len(channels))
        ])
        self.conv_norm_out = GroupNorm(groups, channels[-1], NORM_EPS, dtype=dtype)
        self.conv_out = Conv2d(channels[-1], config.out_channels, 3, padding=1, dtype=dtype)

    def construct(self, x):
        x = self.mid_block(self.conv_in(x))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(mint.nn.functional.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Cell):
    """The VAE; ``vae(latents)`` decodes, ``vae.encode(images)`` returns ``(mean, logvar)``."""

    def __init__(self, config: AutoencoderKLConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.config = config
        self.compute_dtype = dtype
        latent = config.latent_channels
        self.encoder = Encoder(config, dtype)
        self.decoder = Decoder(config, dtype)
        self.quant_conv = Conv2d(2 * latent, 2 * latent, 1, dtype=dtype) if config.use_quant_conv else None
        self.post_quant_conv = Conv2d(latent, latent, 1, dtype=dtype) if config.use_post_quant_conv else None

    def construct(self, latents):
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)

    @ms.jit
    def _encode_graph(self, images):
        moments = self.encoder(images)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = mint.chunk(moments, 2, 1)
        return mean, mint.clamp(logvar, LOGVAR_RANGE[0], LOGVAR_RANGE[1])

    def encode(self, images: ms.Tensor | np.ndarray) -> tuple[ms.Tensor, ms.Tensor]:
        """Images (B, in_channels, H, W) in [-1, 1] -> the posterior's ``(mean, logvar)``, each (B, latent, H/f, W/f)."""
        images = self._as_input(images, self.config.in_channels, "images", self.config.downscale_factor)
        return self._encode_graph(images)

    def encode_mode(self, images: ms.Tensor | np.ndarray) -> ms.Tensor:
        """The posterior's mode (its mean): the deterministic latent the pipeline uses for reference images."""
        return self.encode(images)[0]

    def decode(self, latents: ms.Tensor | np.ndarray) -> ms.Tensor:
        """Latents (B, latent_channels, h, w), already de-normalised -> images (B, out_channels, h*f, w*f)."""
        return self(self._as_input(latents, self.config.latent_channels, "latents", 1))

    def _as_input(self, x, channels: int, what: str, multiple: int) -> ms.Tensor:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"AutoencoderKL: {what} must have shape (batch, {channels}, height, width), "
                             f"got {tuple(x.shape)}")
        if x.shape[2] % multiple or x.shape[3] % multiple:
            raise ValueError(f"AutoencoderKL: {what} height and width {tuple(x.shape[2:])} must be multiples of "
                             f"{multiple}; crop or resize the image first")
        return graph_input(f"AutoencoderKL {what}", x, self.compute_dtype)
