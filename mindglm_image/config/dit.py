"""Config of the DiT decoder (``transformer/config.json``).

Fields and defaults equal diffusers 0.42.1's ``GlmImageTransformer2DModel`` constructor, so the real
checkpoint's config.json (with its ``_class_name``/``_diffusers_version`` kept in ``extra``) round-trips.
"""
from __future__ import annotations

import dataclasses

from .base import ConfigError, HFConfig


@dataclasses.dataclass
class GlmImageTransformerConfig(HFConfig):
    patch_size: int = 2
    in_channels: int = 16
    out_channels: int = 16
    num_layers: int = 30
    attention_head_dim: int = 40
    num_attention_heads: int = 64
    text_embed_dim: int = 1472
    time_embed_dim: int = 512
    condition_dim: int = 256
    prior_vq_quantizer_codebook_size: int = 16384

    def validate(self) -> None:
        for name in ("patch_size", "in_channels", "out_channels", "num_layers", "attention_head_dim",
                     "num_attention_heads", "text_embed_dim", "time_embed_dim", "condition_dim",
                     "prior_vq_quantizer_codebook_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"transformer: {name}={getattr(self, name)} must be a positive integer")
        if self.attention_head_dim % 4:
            raise ConfigError(
                f"transformer: attention_head_dim={self.attention_head_dim} must be a multiple of 4 "
                "(the 2-D rotary embedding gives a quarter of each head to each of sin/cos x row/column)"
            )

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim
