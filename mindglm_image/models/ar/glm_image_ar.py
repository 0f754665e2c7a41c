"""The AR model (``vision_language_encoder``): vision encoder + VQ quantizer + text decoder + vision-id head.

Parameter names equal the reference ``GlmImageForConditionalGeneration.state_dict()`` keys
(``model.language_model.layers.0.self_attn.q_proj.weight``, ``model.visual...``, ``model.vqmodel...``,
``lm_head.weight``). The head covers only the ``vision_vocab_size`` image ids.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn

from ...config.ar import GlmImageConfig
from ...graph_inputs import graph_input
from ..layers import Linear
from .kv_cache import StaticKVCache
from .rope import RopePositions, compute_rope_positions
from .text_model import GlmImageTextModel
from .vision import GlmImageVisionModel
from .vqvae import GlmImageVQVAE


class GlmImageModel(nn.Cell):
    """Holds the three sub-models; ``construct`` runs the text decoder (image ids are already in input_ids)."""

    def __init__(self, config: GlmImageConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.visual = GlmImageVisionModel(config.vision_config, dtype=dtype)
        self.language_model = GlmImageTextModel(config.text_config, dtype=dtype)
        self.vqmodel = GlmImageVQVAE(config.vq_config, dtype=dtype)

    def construct(self, input_ids, position_ids, attention_mask):
        return self.language_model(input_ids, position_ids, attention_mask)


class GlmImageForConditionalGeneration(nn.Cell):
    """``construct(input_ids (B, L), position_ids (3, B, L), attention_mask (B, L))`` -> logits (B, L, vision_vocab).

    For generation use ``rope_positions`` for the positions and ``new_kv_cache`` for a static KV cache
    (driven by ``generation.decode_session.DecodeSession``, whose decode step compiles once).
    """

    def __init__(self, config: GlmImageConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.config = config
        self.compute_dtype = dtype
        text = config.text_config
        self.model = GlmImageModel(config, dtype)
        self.lm_head = Linear(text.hidden_size, text.vision_vocab_size, bias=False, dtype=dtype)

    def construct(self, input_ids, position_ids, attention_mask):
        return self.lm_head(self.model(input_ids, position_ids, attention_mask))

    def cached_logits(self, input_ids, position_ids, cache_position, attention_mask, keys, values, key_mask):
        """Graph body of a cached step (see ``generation.decode_session``): logits (B, V) of the last new token."""
        hidden = self.model.language_model.forward_cached(input_ids, position_ids, cache_position, attention_mask,
                                                          keys, values, key_mask)
        return self.lm_head(hidden[:, -1])

    def plan_decode(self, positions, start, key_mask):
        """Graph body run once before a sampled decode loop: ``GlmImageTextModel.plan_decode``."""
        return self.model.language_model.plan_decode(positions, start, key_mask)

    def decode_logits(self, token, step, start, plan, keys, values):
        """Graph body of one planned decode step (``plan`` from ``plan_decode``): logits (B, V) of ``token`` (B, 1)."""
        hidden = self.model.language_model.forward_decode(token, step, start, *plan, keys, values)
        return self.lm_head(hidden[:, -1])

    def rope_positions(self, input_ids, image_grid_thw=None, images_per_sample=None,
                       attention_mask=None) -> RopePositions:
        """Prefill (3, B, L) and decode (B, 3, N) positions of a prompt batch, with this model's marker ids."""
        return compute_rope_positions(input_ids, self.config.image_start_token_id, self.config.image_end_token_id,
                                      image_grid_thw, images_per_sample, attention_mask)

    def new_kv_cache(self, batch_size: int, max_len: int) -> StaticKVCache:
        """Allocate a static KV cache of ``max_len`` slots per sample (prompt + generated tokens)."""
        text = self.config.text_config
        return StaticKVCache(text.num_hidden_layers, batch_size, text.num_key_value_heads, max_len,
                             text.resolved_head_dim, self.compute_dtype)

    def logits(self, input_ids, position_ids, attention_mask=None) -> ms.Tensor:
        """Host entry of the full forward: checks shapes, accepts numpy, returns logits (B, L, vision_vocab)."""
        shape = tuple(input_ids.shape) if isinstance(input_ids, ms.Tensor) else np.shape(input_ids)
        if len(shape) != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len), got {shape}")
        mask = np.ones(shape, np.int32) if attention_mask is None else attention_mask
        return self(graph_input("input_ids", input_ids, ms.int32, shape),
                    graph_input("position_ids", position_ids, ms.int32, (3, *shape),
                                "; compute them with rope_positions(...).prefill"),
                    graph_input("attention_mask", mask, ms.int32, shape))
