"""The GLM-Image DiT decoder (``GlmImageTransformer2DModel``) as a MindSpore cell.

One sequence per image: glyph-text tokens followed by latent patch tokens (each patch embedding plus
its projected prior-token embedding). Every block modulates the two streams separately (adaLN-zero),
runs joint attention with qk layer-norm and a 2-D rotary embedding on the patch tokens only, and a
shared GELU(tanh) feed-forward. Reference-image keys/values (image-to-image) enter each block's
attention as extra context; ``forward_with_kv`` also returns each block's own keys/values so the
reference pass can produce them (see ``kv_cache.py``). A batch of prompts with glyph texts of different
lengths is left-padded; ``text_bias`` (0 on real tokens, a large negative on padding) keeps the padding
out of every softmax, so an image does not depend on its batch-mates (the reference attends to it).
``cache_bias`` does the same for the cached keys: a batched CFG call masks them off in its unconditional rows.

Shape-dependent inputs (rotary tables) are computed on the host by ``transformer_inputs``, so the
compiled graph is static per (batch, text length, latent size, cache length).
"""
from __future__ import annotations

import functools
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn, ops

from ...config.dit import GlmImageTransformerConfig
from ...graph_inputs import graph_input
from ...ops import resolve
from ...ops.attention import MASKED
from ...ops.broadcast import broadcast_like
from ..layers import Embedding, Linear
from .rotary import rotary_tables

_NORM_EPS = 1e-5


class SinusoidalProjection(nn.Cell):
    """Sinusoidal embedding of scalars, [cos | sin] order, frequency exponent spread over half the width."""

    def __init__(self, num_channels: int, max_period: float = 10000.0):
        super().__init__()
        half = num_channels // 2
        exponent = (-math.log(max_period) * np.arange(half, dtype=np.float32) / np.float32(half)).astype(np.float32)
        # fp32 exponent as the reference, exp in fp64 then rounded: this matches torch's fp32 exp far more
        # often than numpy's fp32 exp, and a 1-ulp frequency error grows ~1000x at timestep 1000
        self.freqs = Tensor(np.exp(exponent.astype(np.float64)).astype(np.float32))
        self.pad = num_channels % 2  # odd widths get one zero column, as the reference does

    def construct(self, values):
        args = values.astype(ms.float32).unsqueeze(-1) * self.freqs      # (N, half)
        emb = mint.cat((mint.cos(args), mint.sin(args)), -1)
        if self.pad:
            emb = mint.cat((emb, mint.zeros_like(emb[:, :1])), -1)
        return emb


class SiluMLP(nn.Cell):
    """linear_1 -> SiLU -> linear_2 (the timestep and size-condition embedders)."""

    def __init__(self, in_dim: int, out_dim: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.linear_1 = Linear(in_dim, out_dim, dtype=dtype)
        self.linear_2 = Linear(out_dim, out_dim, dtype=dtype)

    def construct(self, x):
        return self.linear_2(mint.nn.functional.silu(self.linear_1(x)))


class GlmImageCombinedTimestepSizeEmbeddings(nn.Cell):
    """temb = SiLU(MLP(sin(t)) + MLP([sin(crop_y, crop_x), sin(target_h, target_w)]))."""

    def __init__(self, embedding_dim: int, condition_dim: int, timesteps_dim: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.time_proj = SinusoidalProjection(timesteps_dim)
        self.condition_proj = SinusoidalProjection(condition_dim)
        self.timestep_embedder = SiluMLP(timesteps_dim, embedding_dim, dtype=dtype)
        self.condition_embedder = SiluMLP(4 * condition_dim, embedding_dim, dtype=dtype)
        self.dtype = dtype

    def construct(self, timestep, target_size, crop_coords):
        batch = timestep.shape[0]
        crop = self.condition_proj(crop_coords.reshape(-1)).reshape(batch, -1)
        target = self.condition_proj(target_size.reshape(-1)).reshape(batch, -1)
        t_emb = self.timestep_embedder(self.time_proj(timestep).astype(self.dtype))
        c_emb = self.condition_embedder(mint.cat((crop, target), 1).astype(self.dtype))
        return mint.nn.functional.silu(t_emb + c_emb)


class GlmImageImageProjector(nn.Cell):
    """Patchify (B, C, H, W) into (B, H/p * W/p, C*p*p) row-major patches, then project."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.patch_size = patch_size
        self.proj = Linear(in_channels * patch_size * patch_size, hidden_size, dtype=dtype)

    def construct(self, x):
        b, c, h, w = x.shape
        p = self.patch_size
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return self.proj(x.reshape(b, (h // p) * (w // p), c * p * p))


class ProjectThenActivate(nn.Cell):
    """``proj`` followed by an activation: the first layer of a diffusers ``FeedForward``."""

    def __init__(self, dim_in: int, dim_out: int, activation: str, dtype: ms.Type = ms.float32):
        super().__init__()
        if activation not in ("gelu", "gelu-approximate", "linear-silu"):
            raise ValueError(f"unsupported feed-forward activation {activation!r}")
        self.activation = activation
        self.proj = Linear(dim_in, dim_out, dtype=dtype)
        self.gelu = resolve("gelu").fn

    def construct(self, x):
        x = self.proj(x)
        if self.activation == "linear-silu":
            return mint.nn.functional.silu(x)
        return self.gelu(x, "tanh" if self.activation == "gelu-approximate" else "none")


class FeedForward(nn.Cell):
    """net.0 (projection + activation), net.1 (dropout slot, no weights), net.2 (output projection)."""

    def __init__(self, dim: int, dim_out: int, inner_dim: int, activation: str, dtype: ms.Type = ms.float32):
        super().__init__()
        # the identity keeps the reference's index of the output layer (net.2) in parameter names
        self.net = nn.CellList([ProjectThenActivate(dim, inner_dim, activation, dtype=dtype), nn.Identity(),
                                Linear(inner_dim, dim_out, dtype=dtype)])

    def construct(self, x):
        return self.net[2](self.net[0](x))


class GlmImageAttention(nn.Cell):
    """Joint text+image attention with qk layer-norm; rotary on image tokens; cached reference keys/values
    (image-to-image) enter as extra context in front of the block's own."""

    def __init__(self, dim: int, heads: int, head_dim: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        inner = heads * head_dim
        self.to_q = Linear(dim, inner, dtype=dtype)
        self.to_k = Linear(dim, inner, dtype=dtype)
        self.to_v = Linear(dim, inner, dtype=dtype)
        self.to_out = nn.CellList([Linear(inner, dim, dtype=dtype)])
        self.layer_norm = resolve("layer_norm").fn
        self.rotary = resolve("rotary").fn
        self.attention = resolve("attention").fn

    def _rotate(self, x, rope_cos, rope_sin):
        """Rotary over the joint [text | image] sequence of (B, S, H, d); the tables' text rows are the identity
        (``rotary_tables(text_tokens=T)``), so the glyph tokens pass unrotated without slicing x."""
        if rope_cos.shape[0] != x.shape[1]:  # static shapes: raised while compiling
            raise ValueError(f"rotary tables have {rope_cos.shape[0]} rows for a sequence of {x.shape[1]} tokens; "
                             f"build them with transformer_inputs (text rows first, then the patches)")
        return self.rotary(x, rope_cos.unsqueeze(1), rope_sin.unsqueeze(1))  # (S, d) -> (S, 1, d): all heads

    def construct(self, hidden_states, encoder_hidden_states, rope_cos, rope_sin, cache_key, cache_value,
                  text_bias=None, cache_bias=None):
        """Returns (image out, text out or None, keys, values); keys/values (B, S, H, d) exclude the cache.
        ``text_bias`` (B, T) / ``cache_bias`` (B, Lc) float32 are added to the scores of the text / cached keys
        (None: all attended)."""
        b, n_image = hidden_states.shape[0], hidden_states.shape[1]
        n_text = 0 if encoder_hidden_states is None else encoder_hidden_states.shape[1]
        # 1. projections of the joint [text | image] sequence, qk layer-norm, rotary (identity on text tokens)
        tokens = hidden_states if encoder_hidden_states is None else mint.cat((encoder_hidden_states, hidden_states), 1)
        query = self.layer_norm(self.to_q(tokens).reshape(b, -1, self.heads, self.head_dim), _NORM_EPS)
        key = self.layer_norm(self.to_k(tokens).reshape(b, -1, self.heads, self.head_dim), _NORM_EPS)
        value = self.to_v(tokens).reshape(b, -1, self.heads, self.head_dim)
        query = self._rotate(query, rope_cos, rope_sin)
        key = self._rotate(key, rope_cos, rope_sin)
        # 2. keys/values are [cache | text | image]; only the text part carries padding
        all_keys, all_values = key, value
        if cache_key is not None:
            all_keys = mint.cat((cache_key, key), 1)
            all_values = mint.cat((cache_value, value), 1)
        bias = None
        if text_bias is not None:
            bias = mint.cat((text_bias, mint.zeros((b, n_image), dtype=ms.float32)), 1)
        if cache_bias is not None:
            own = mint.zeros((b, key.shape[1]), dtype=ms.float32) if bias is None else bias
            bias = mint.cat((cache_bias, own), 1)
        elif bias is not None and cache_key is not None:  # cat, not list.insert: that falls back to Python in graph mode
            bias = mint.cat((mint.zeros((b, cache_key.shape[1]), dtype=ms.float32), bias), 1)
        if bias is not None:
            bias = bias.reshape(b, 1, 1, -1)
        # 3. attention in the projections' layout (BSND: no head transpose on the fused paths), output projection,
        # split back into the two streams
        out = self.attention(query, all_keys, all_values, self.scale, bias, "BSND")
        out = self.to_out[0](out.reshape(b, -1, self.heads * self.head_dim))
        if encoder_hidden_states is None:
            return out, None, key, value
        return out[:, n_text:], out[:, :n_text], key, value


class GlmImageAdaLayerNormZero(nn.Cell):
    """adaLN-zero modulations of both streams from the conditioning embedding (the norms have no weights).

    The linear's 12 output chunks alternate image/text: shift_msa, c_shift_msa, scale_msa, c_scale_msa, ...
    """

    def __init__(self, embedding_dim: int, dim: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.dim = dim
        self.linear = Linear(embedding_dim, 12 * dim, dtype=dtype)

    def construct(self, temb):
        """(image, text) modulations, each a 6-tuple of (B, D): shift_msa, scale_msa, gate_msa, shift_mlp,
        scale_mlp, gate_mlp."""
        emb = self.linear(temb)
        (shift_msa, c_shift_msa, scale_msa, c_scale_msa, gate_msa, c_gate_msa,
         shift_mlp, c_shift_mlp, scale_mlp, c_scale_mlp, gate_mlp, c_gate_mlp) = mint.chunk(emb, 12, -1)
        return ((shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp),
                (c_shift_msa, c_scale_msa, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp))


class GlmImageTransformerBlock(nn.Cell):
    """One DiT block: adaLN-zero modulated joint attention, then a modulated GELU(tanh) feed-forward,
    shared weights for the image and text streams, each gated back into its residual."""

    def __init__(self, dim: int, heads: int, head_dim: int, time_embed_dim: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.norm1 = GlmImageAdaLayerNormZero(time_embed_dim, dim, dtype=dtype)
        self.attn1 = GlmImageAttention(dim, heads, head_dim, dtype=dtype)
        self.ff = FeedForward(dim, dim, 4 * dim, "gelu-approximate", dtype=dtype)
        self.ada_layer_norm = resolve("ada_layer_norm").fn
        self.gated_residual = resolve("gated_residual").fn

    def _feed_forward(self, x, shift_mlp, scale_mlp, gate_mlp):
        """x + gate_mlp * FF(adaLN(x; shift_mlp, scale_mlp))."""
        return self.gated_residual(x, self.ff(self.ada_layer_norm(x, shift_mlp, scale_mlp, _NORM_EPS)), gate_mlp)

    def construct(self, hidden_states, encoder_hidden_states, temb, rope_cos, rope_sin, cache_key, cache_value,
                  text_bias=None, cache_bias=None):
        # 1. modulations of both streams
        image_mod, text_mod = self.norm1(temb)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = image_mod
        c_shift_msa, c_scale_msa, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = text_mod
        # 2. modulated norms
        norm_hidden_states = self.ada_layer_norm(hidden_states, shift_msa, scale_msa, _NORM_EPS)
        norm_encoder_hidden_states = None
        if encoder_hidden_states is not None:
            norm_encoder_hidden_states = self.ada_layer_norm(encoder_hidden_states, c_shift_msa, c_scale_msa,
                                                             _NORM_EPS)
        # 3. joint attention, gated residual
        attn_hidden_states, attn_encoder_hidden_states, key, value = self.attn1(
            norm_hidden_states, norm_encoder_hidden_states, rope_cos, rope_sin, cache_key, cache_value, text_bias,
            cache_bias)
        hidden_states = self.gated_residual(hidden_states, attn_hidden_states, gate_msa)
        # 4. modulated feed-forward, gated residual
        hidden_states = self._feed_forward(hidden_states, shift_mlp, scale_mlp, gate_mlp)
        if encoder_hidden_states is not None:
            encoder_hidden_states = self.gated_residual(encoder_hidden_states, attn_encoder_hidden_states, c_gate_msa)
            encoder_hidden_states = self._feed_forward(encoder_hidden_states, c_shift_mlp, c_scale_mlp, c_gate_mlp)
        return hidden_states, encoder_hidden_states, key, value


class GlmImageAdaLayerNormContinuous(nn.Cell):
    """Final norm: LN(x) * (1 + scale) + shift with (scale, shift) = linear(temb), no activation first."""

    def __init__(self, dim: int, conditioning_dim: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.linear = Linear(conditioning_dim, 2 * dim, dtype=dtype)
        self.ada_layer_norm = resolve("ada_layer_norm").fn

    def construct(self, x, temb):
        scale, shift = mint.chunk(self.linear(temb.astype(x.dtype)), 2, -1)
        return self.ada_layer_norm(x, shift, scale, _NORM_EPS)


class GlmImageTransformer2DModel(nn.Cell):
    """Predicts the flow-matching velocity for latents (B, C, H, W); see ``transformer_inputs`` for inputs.

    Latents and glyph embeddings are cast to the compute dtype inside, so fp32 host inputs feed a bf16 model.
    """

    def __init__(self, config: GlmImageTransformerConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        config.validate()
        self.config = config
        self.compute_dtype = dtype
        self.patch_size = config.patch_size
        self.out_channels = config.out_channels
        inner = config.inner_dim
        self.image_projector = GlmImageImageProjector(config.in_channels, inner, config.patch_size, dtype=dtype)
        self.glyph_projector = FeedForward(config.text_embed_dim, inner, inner, "gelu", dtype=dtype)
        self.prior_token_embedding = Embedding(config.prior_vq_quantizer_codebook_size, inner, dtype=dtype)
        self.prior_projector = FeedForward(inner, inner, inner, "linear-silu", dtype=dtype)
        self.time_condition_embed = GlmImageCombinedTimestepSizeEmbeddings(
            config.time_embed_dim, config.condition_dim, config.time_embed_dim, dtype=dtype)
        self.transformer_blocks = nn.CellList([
            GlmImageTransformerBlock(inner, config.num_attention_heads, config.attention_head_dim,
                                     config.time_embed_dim, dtype=dtype)
            for _ in range(config.num_layers)
        ])
        self.norm_out = GlmImageAdaLayerNormContinuous(inner, config.time_embed_dim, dtype=dtype)
        self.proj_out = Linear(inner, config.patch_size ** 2 * config.out_channels, dtype=dtype)

    def construct(self, hidden_states, encoder_hidden_states, prior_token_id, prior_token_drop, timestep,
                  target_size, crop_coords, rope_cos, rope_sin, text_bias=None, cache_key=None, cache_value=None,
                  cache_bias=None):
        """Velocity (B, out_channels, H, W). ``cache_key``/``cache_value`` (L, B, Lc, heads, head_dim): read mode;
        ``cache_bias`` (B, Lc): MASKED on the cached keys of rows that must not read them (batched CFG)."""
        return self._forward(hidden_states, encoder_hidden_states, prior_token_id, prior_token_drop, timestep,
                             target_size, crop_coords, rope_cos, rope_sin, cache_key, cache_value, text_bias, False,
                             cache_bias)

    def forward_with_kv(self, hidden_states, encoder_hidden_states, prior_token_id, prior_token_drop, timestep,
                        target_size, crop_coords, rope_cos, rope_sin, cache_key, cache_value, text_bias=None):
        """(sample, keys, values); keys/values (L, B, S, heads, head_dim) are every block's own, uncached."""
        return self._forward(hidden_states, encoder_hidden_states, prior_token_id, prior_token_drop, timestep,
                             target_size, crop_coords, rope_cos, rope_sin, cache_key, cache_value, text_bias, True)

    def prepare_denoising(self, encoder_hidden_states, prior_token_id, prior_token_drop, timesteps, target_size,
                          crop_coords):
        """The part of every denoising step that does not change within a loop, once: the projected prior-token
        embeddings (B, N, inner), the projected glyph embeddings (B, T, inner) and the time embeddings of all
        steps (steps, B, time_embed_dim), from ``timesteps``, ``target_size`` and ``crop_coords`` given for
        every (step, sample) row, step-major ((steps * B,) and (steps * B, 2))."""
        prior, text = self._condition(encoder_hidden_states, prior_token_id, prior_token_drop)
        temb = self.time_condition_embed(timesteps, target_size, crop_coords)
        return prior, text, temb.reshape(-1, prior_token_id.shape[0], temb.shape[-1])

    def denoise_step(self, hidden_states, prior, text, temb, rope_cos, rope_sin, text_bias=None, cache_key=None,
                     cache_value=None, cache_bias=None):
        """``construct``'s velocity from ``prepare_denoising``'s outputs, ``temb`` (B, time_embed_dim) the step's
        row of its time embeddings (so the step's graph does not depend on the number of steps)."""
        return self._blocks(hidden_states, prior, text, temb, rope_cos, rope_sin, cache_key, cache_value, text_bias,
                            False, cache_bias)

    def _condition(self, encoder_hidden_states, prior_token_id, prior_token_drop):
        """Projected prior-token embeddings (zeroed where dropped) and projected glyph embeddings (None: no text)."""
        prior = self.prior_token_embedding(prior_token_id)
        prior = prior * broadcast_like(mint.logical_not(prior_token_drop).astype(prior.dtype).unsqueeze(-1), prior)
        text = None
        if encoder_hidden_states is not None:
            text = self.glyph_projector(encoder_hidden_states.astype(self.compute_dtype))
        return self.prior_projector(prior), text

    def _forward(self, hidden_states, encoder_hidden_states, prior_token_id, prior_token_drop, timestep,
                 target_size, crop_coords, rope_cos, rope_sin, cache_key, cache_value, text_bias, with_kv: bool,
                 cache_bias=None):
        prior, text = self._condition(encoder_hidden_states, prior_token_id, prior_token_drop)
        temb = self.time_condition_embed(timestep, target_size, crop_coords)
        return self._blocks(hidden_states, prior, text, temb, rope_cos, rope_sin, cache_key, cache_value, text_bias,
                            with_kv, cache_bias)

    def _blocks(self, hidden_states, prior, text, temb, rope_cos, rope_sin, cache_key, cache_value, text_bias,
                with_kv: bool, cache_bias=None):
        # ``with_kv`` is a compile-time constant: the velocity-only graph never collects keys/values. (Collecting
        # and then discarding them left list appends, side effects in graph mode, that MindSpore removed with a
        # "Some side effect nodes were eliminated by mistake" warning on every compile.)
        b, _, height, width = hidden_states.shape
        p = self.patch_size
        # 1. patch embeddings plus the projected prior tokens
        x = self.image_projector(hidden_states.astype(self.compute_dtype)) + prior
        # 2. the blocks, each reading the reference-image cache if given
        keys = []
        values = []
        for i, block in enumerate(self.transformer_blocks):
            if cache_key is None:
                x, text, key, value = block(x, text, temb, rope_cos, rope_sin, None, None, text_bias)
            else:
                x, text, key, value = block(x, text, temb, rope_cos, rope_sin, cache_key[i], cache_value[i],
                                            text_bias, cache_bias)
            if with_kv:
                keys.append(key)
                values.append(value)
        # 3. final modulated norm, projection, unpatchify
        x = self.proj_out(self.norm_out(x, temb))
        x = x.reshape(b, height // p, width // p, self.out_channels, p, p).permute(0, 3, 1, 4, 2, 5)
        sample = x.reshape(b, self.out_channels, height, width)
        if with_kv:
            return sample, ops.stack(keys), ops.stack(values)
        return sample


def transformer_inputs(config: GlmImageTransformerConfig, hidden_states, encoder_hidden_states, prior_token_id,
                       prior_token_drop, timestep, target_size, crop_coords, encoder_attention_mask=None) -> tuple:
    """Check one call's inputs and return them as tensors, rotary tables and text bias appended, in
    ``construct`` order (cache tensors, if any, follow).

    hidden_states (B, in_channels, H, W) float latents, H and W divisible by patch_size;
    encoder_hidden_states (B, T, text_embed_dim) glyph embeddings, or None (no text: the KV-cache write pass);
    prior_token_id (B, H/p * W/p) ids; prior_token_drop the same shape, bool (True zeroes that prior
    embedding: the unconditional pass); timestep (B,) (the pipeline passes t - 1); target_size and
    crop_coords (B, 2): pixel (height, width) and top-left crop; encoder_attention_mask (B, T) bool, False
    on padded glyph tokens, or None (no bias input: every token attended). numpy arrays or MindSpore tensors
    (``graph_input``: tensors are cast on the device, never read back, so the denoising loop stays there).
    """
    if len(hidden_states.shape) != 4 or hidden_states.shape[1] != config.in_channels:
        raise ValueError(f"hidden_states must be (batch, {config.in_channels}, height, width) latents, "
                         f"got shape {tuple(hidden_states.shape)}")
    b, _, h, w = hidden_states.shape
    p = config.patch_size
    if h % p or w % p:
        raise ValueError(f"latent size {h}x{w} is not divisible by patch_size={p}; "
                         f"use image sizes whose latent height and width are multiples of {p}")
    grid = (b, (h // p) * (w // p))
    for name, value in (("prior_token_id", prior_token_id), ("prior_token_drop", prior_token_drop)):
        if tuple(value.shape) != grid:
            raise ValueError(f"{name} must have shape {grid} (one per {h // p}x{w // p} latent patch), got "
                             f"{tuple(value.shape)}; upsample the AR token grid with upsample_prior_tokens")
    if encoder_hidden_states is not None:
        shape = tuple(encoder_hidden_states.shape)
        if len(shape) != 3 or shape[0] != b or shape[2] != config.text_embed_dim or shape[1] < 1:
            raise ValueError(f"encoder_hidden_states must be (batch={b}, tokens>=1, {config.text_embed_dim}), "
                             f"got {shape}; pass None only for the KV-cache write pass")
    if tuple(timestep.shape) != (b,):
        raise ValueError(f"timestep must have shape ({b},), one value per sample, got {tuple(timestep.shape)}")
    for name, value in (("target_size", target_size), ("crop_coords", crop_coords)):
        if tuple(value.shape) != (b, 2):
            raise ValueError(f"{name} must have shape ({b}, 2), got {tuple(value.shape)}")
    text_bias = None
    if encoder_attention_mask is not None:
        mask = np.asarray(encoder_attention_mask, dtype=bool)
        if encoder_hidden_states is None or mask.shape != tuple(encoder_hidden_states.shape[:2]):
            raise ValueError(f"encoder_attention_mask must have the shape (batch, tokens) of encoder_hidden_states, "
                             f"got {mask.shape}")
        if not mask.any(axis=1).all():
            raise ValueError("encoder_attention_mask masks every glyph token of a sample; keep at least one")
        text_bias = Tensor(np.where(mask, np.float32(0), np.float32(MASKED)))
    cos, sin = _rotary(config.attention_head_dim, h // p, w // p,
                       0 if encoder_hidden_states is None else encoder_hidden_states.shape[1])
    return (graph_input("hidden_states", hidden_states, ms.float32),
            None if encoder_hidden_states is None else
            graph_input("encoder_hidden_states", encoder_hidden_states, ms.float32),
            graph_input("prior_token_id", prior_token_id, ms.int32),
            graph_input("prior_token_drop", prior_token_drop, ms.bool_), graph_input("timestep", timestep, ms.float32),
            graph_input("target_size", target_size, ms.float32), graph_input("crop_coords", crop_coords, ms.float32),
            cos, sin, text_bias)


@functools.lru_cache(maxsize=16)
def _rotary(head_dim: int, grid_h: int, grid_w: int, text_tokens: int) -> tuple[Tensor, Tensor]:
    cos, sin = rotary_tables(head_dim, grid_h, grid_w, text_tokens)
    return Tensor(cos), Tensor(sin)

