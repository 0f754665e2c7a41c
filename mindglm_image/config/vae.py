"""Config of the image autoencoder (``vae/config.json``).

Field names and defaults equal diffusers 0.42.1's ``AutoencoderKL`` so the real checkpoint's config.json
loads unchanged and writes back the same (``_class_name``/``_diffusers_version`` land in ``extra``).
"""
from __future__ import annotations

import dataclasses

from .base import ConfigError, HFConfig

_DOWN_BLOCK = "DownEncoderBlock2D"
_UP_BLOCK = "UpDecoderBlock2D"
_ACTIVATIONS = ("silu", "swish")  # the same function under two names in diffusers


@dataclasses.dataclass
class AutoencoderKLConfig(HFConfig):
    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = (_DOWN_BLOCK,)
    up_block_types: tuple[str, ...] = (_UP_BLOCK,)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | tuple[int, ...] = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    def validate(self) -> None:
        blocks = len(self.block_out_channels)
        if blocks == 0 or len(self.down_block_types) != blocks or len(self.up_block_types) != blocks:
            raise ConfigError(
                f"vae: down_block_types ({len(self.down_block_types)}), up_block_types ({len(self.up_block_types)}) "
                f"and block_out_channels ({blocks}) must have the same non-zero length"
            )
        unsupported = {t for t in self.down_block_types if t != _DOWN_BLOCK} | {
            t for t in self.up_block_types if t != _UP_BLOCK}
        if unsupported:
            raise ConfigError(f"vae: block types {sorted(unsupported)} are not supported; "
                              f"only {_DOWN_BLOCK} and {_UP_BLOCK} are implemented")
        if self.act_fn not in _ACTIVATIONS:
            raise ConfigError(f"vae.act_fn={self.act_fn!r}: only {_ACTIVATIONS} are supported")
        if self.layers_per_block < 1:
            raise ConfigError(f"vae.layers_per_block={self.layers_per_block} must be at least 1")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ConfigError(f"vae: block_out_channels {bad} are not divisible by norm_num_groups="
                              f"{self.norm_num_groups}; fix either value in config.json")
        for name in ("latents_mean", "latents_std"):
            stats = getattr(self, name)
            if stats is not None and len(stats) != self.latent_channels:
                raise ConfigError(f"vae.{name} has {len(stats)} values but latent_channels={self.latent_channels}; "
                                  "give one value per latent channel")
        if self.latents_std is not None and any(s <= 0 for s in self.latents_std):
            raise ConfigError("vae.latents_std must be positive (latents are divided by it)")

    @property
    def downscale_factor(self) -> int:
        """Pixels per latent cell along each axis (8 for GLM-Image's four blocks)."""
        return 2 ** (len(self.block_out_channels) - 1)
