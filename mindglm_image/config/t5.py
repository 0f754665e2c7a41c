"""Config of the Glyph-byT5 text encoder (``text_encoder/config.json``, a T5 encoder).

Field names and defaults equal ``transformers`` 5.23.0's ``T5Config`` so the checkpoint's config.json
loads unchanged; the derived ``dense_act_fn``/``is_gated_act`` keys it also stores stay in ``extra``
and are recomputed here from ``feed_forward_proj``, which is what the reference model reads.
"""
from __future__ import annotations

import dataclasses

from .base import ConfigError, HFConfig

#: feed-forward activations the encoder implements (names as in transformers' ACT2FN)
SUPPORTED_ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "silu")


@dataclasses.dataclass
class T5Config(HFConfig):
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"
    is_encoder_decoder: bool = True
    use_cache: bool = True
    pad_token_id: int | None = 0
    eos_token_id: int | list | None = 1
    classifier_dropout: float = 0.0
    is_decoder: bool = False

    @property
    def is_gated_act(self) -> bool:
        return self.feed_forward_proj.split("-")[0] == "gated"

    @property
    def dense_act_fn(self) -> str:
        # "gated-gelu" historically means the tanh approximation (T5 v1.1 / byT5 checkpoints).
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    def validate(self) -> None:
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ConfigError(
                f"feed_forward_proj={self.feed_forward_proj!r} is malformed; use 'ACT' or 'gated-ACT' (e.g. 'relu', "
                "'gated-gelu')"
            )
        if self.dense_act_fn not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"feed_forward_proj={self.feed_forward_proj!r}: activation {self.dense_act_fn!r} is not supported; "
                f"use one of {SUPPORTED_ACTIVATIONS}"
            )
        if self.is_decoder:
            raise ConfigError("is_decoder=true: only the T5 encoder is ported (the glyph encoder); set it to false")
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        # Bidirectional buckets: half per direction, half of those exact; the log range needs both non-empty.
        max_exact = self.relative_attention_num_buckets // 4
        if max_exact < 1 or self.relative_attention_max_distance <= max_exact:
            raise ConfigError(
                f"relative_attention_num_buckets={self.relative_attention_num_buckets} / relative_attention_max_distance="
                f"{self.relative_attention_max_distance}: need at least 4 buckets and a max distance above "
                "num_buckets // 4"
            )
