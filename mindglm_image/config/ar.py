"""Configs of the autoregressive half (``vision_language_encoder/config.json``).

Field names and defaults equal ``transformers`` 5.23.0's ``GlmImageConfig`` family, so the real
checkpoint's config.json loads unchanged and writes back the same.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .base import ConfigError, HFConfig


def _default_rope() -> dict[str, Any]:
    # GLM-4-9B-0414 lineage: rotary on half of each head, split into (t, h, w) sections.
    return {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12], "partial_rotary_factor": 0.5}


@dataclasses.dataclass
class GlmImageTextConfig(HFConfig):
    vocab_size: int = 168064
    hidden_size: int = 4096
    intermediate_size: int = 13696
    num_hidden_layers: int = 40
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 2
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-5
    use_cache: bool = True
    attention_dropout: float = 0.0
    rope_parameters: dict | None = dataclasses.field(default_factory=_default_rope)
    pad_token_id: int = 167841
    vision_vocab_size: int = 16512
    attention_bias: bool = True
    eos_token_id: int | list | None = 16385
    head_dim: int | None = None

    def validate(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.rope_parameters is None:
            self.rope_parameters = _default_rope()
        if self.hidden_act != "silu":
            raise ConfigError(f"text_config.hidden_act={self.hidden_act!r}: only 'silu' is supported")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"text_config: num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if 2 * sum(self.mrope_section) != self.rotary_dim:
            raise ConfigError(
                f"text_config.rope_parameters: mrope_section {self.mrope_section} must sum to half the rotary "
                f"dim ({self.rotary_dim} = head_dim {self.resolved_head_dim} x partial_rotary_factor "
                f"{self.partial_rotary_factor})"
            )

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def partial_rotary_factor(self) -> float:
        return float(self.rope_parameters.get("partial_rotary_factor", 1.0))

    @property
    def rotary_dim(self) -> int:
        return int(self.resolved_head_dim * self.partial_rotary_factor)

    @property
    def rope_theta(self) -> float:
        return float(self.rope_parameters.get("rope_theta", 10000.0))

    @property
    def mrope_section(self) -> list[int]:
        return list(self.rope_parameters.get("mrope_section", [8, 12, 12]))


@dataclasses.dataclass
class GlmImageVisionConfig(HFConfig):
    depth: int = 40
    hidden_size: int = 1536
    hidden_act: str = "gelu"
    attention_bias: bool = True
    attention_dropout: float = 0.0
    num_heads: int = 16
    in_channels: int = 3
    image_size: int | list | tuple = 2048
    patch_size: int | list | tuple = 16
    spatial_merge_size: int = 1
    intermediate_size: int = 6144
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"vision_config: hidden_size={self.hidden_size} not divisible by num_heads={self.num_heads}")
        if self.spatial_merge_size != 1:
            raise ConfigError("vision_config.spatial_merge_size must be 1 (GLM-Image's VQ path uses unmerged patches)")

    @property
    def patch(self) -> int:
        return int(self.patch_size if isinstance(self.patch_size, int) else self.patch_size[0])

    @property
    def position_grid(self) -> int:
        """Side of the learned position-embedding grid (image_size // patch_size)."""
        size = self.image_size if isinstance(self.image_size, int) else self.image_size[0]
        return int(size) // self.patch


@dataclasses.dataclass
class GlmImageVQVAEConfig(HFConfig):
    embed_dim: int = 2048
    num_embeddings: int = 16384
    latent_channels: int = 1536
    in_channels: int = 3
    initializer_range: float = 0.02


@dataclasses.dataclass
class GlmImageConfig(HFConfig):
    """Top-level config of ``GlmImageForConditionalGeneration`` (the AR model)."""

    nested = {"text_config": GlmImageTextConfig, "vision_config": GlmImageVisionConfig, "vq_config": GlmImageVQVAEConfig}

    text_config: GlmImageTextConfig = dataclasses.field(default_factory=GlmImageTextConfig)
    vision_config: GlmImageVisionConfig = dataclasses.field(default_factory=GlmImageVisionConfig)
    vq_config: GlmImageVQVAEConfig = dataclasses.field(default_factory=GlmImageVQVAEConfig)
    image_token_id: int = 167855
    image_start_token_id: int = 16384
    image_end_token_id: int = 16385
    tie_word_embeddings: bool = False

    def validate(self) -> None:
        if self.vq_config.latent_channels != self.vision_config.hidden_size:
            raise ConfigError(
                f"vq_config.latent_channels={self.vq_config.latent_channels} must equal "
                f"vision_config.hidden_size={self.vision_config.hidden_size}"
            )
        if self.tie_word_embeddings:
            raise ConfigError("tie_word_embeddings=True is not supported: GLM-Image's lm_head covers vision ids only")
