"""Flow-matching loss of the DiT decoder, in the convention our sampler integrates.

The sampler (``scheduler/flow_match.py``, ``pipeline/denoise.py``) walks sigma from 1 (noise) to 0 with
``x <- x + (sigma_next - sigma) * v`` and calls the DiT with timestep ``t - 1``; so along the path
``x_t = sigma * noise + (1 - sigma) * x_0`` the DiT must predict ``v = noise - x_0``. Training draws an
integer timestep ``t`` in [1, 1000] per sample, turns it into sigma with the same resolution shift ``mu``
the scheduler applies at that image size, and regresses the DiT output on ``v`` (mean squared error).

Everything random (noise, timesteps, CFG dropout) is drawn on the host by ``DiTBatchMaker`` from the
trainer's numpy generator, so a checkpoint holds the whole RNG state and a resumed run draws the same.
"""
from __future__ import annotations

import dataclasses

import mindspore as ms
import numpy as np
from mindspore import mint, nn

from ..config.dit import GlmImageTransformerConfig
from ..graph_inputs import bucketed, graph_input
from ..models.dit.transformer import GlmImageTransformer2DModel, transformer_inputs
from ..scheduler.flow_match import FlowMatchEulerScheduler, calculate_shift, image_seq_len
from .config import DiTLossConfig

#: inputs of one reference image group in ``DiTFlowMatchLoss.construct``'s ``*refs``
REF_FIELDS = 5


class DiTFlowMatchLoss(nn.Cell):
    """Scalar fp32 loss of one batch; ``construct`` inputs are made by ``DiTBatchMaker``."""

    def __init__(self, transformer: GlmImageTransformer2DModel):
        super().__init__(auto_prefix=False)  # parameter names stay the transformer's own
        self.transformer = transformer

    def construct(self, latents, noise, sigma, timestep, glyph, prior_ids, prior_drop, target_size, crop_coords,
                  rope_cos, rope_sin, text_bias, *refs):
        """``text_bias`` (B, T): the glyph padding mask as a score bias (see ``transformer_inputs``); ``refs``: per
        reference image k of an editing batch, (latents, prior_ids, size, rope_cos, rope_sin)."""
        # 1. reference images (editing): one write pass per image, as the pipeline's KV cache; gradients flow
        #    through it. Several images of a sample are concatenated along the sequence in order.
        cache_key, cache_value = None, None
        for k in range(len(refs) // REF_FIELDS):
            ref_latents, ref_ids, ref_size, ref_cos, ref_sin = refs[REF_FIELDS * k:REF_FIELDS * (k + 1)]
            batch = ref_latents.shape[0]
            _, keys, values = self.transformer.forward_with_kv(
                ref_latents, None, ref_ids, mint.zeros(ref_ids.shape, dtype=ms.bool_),
                mint.zeros((batch,), dtype=ms.float32), ref_size, mint.zeros((batch, 2), dtype=ms.float32),
                ref_cos, ref_sin, None, None)
            if cache_key is None:
                cache_key, cache_value = keys, values
            else:
                cache_key, cache_value = mint.cat((cache_key, keys), 2), mint.cat((cache_value, values), 2)
        # 2. noisy latents on the flow path and the velocity target
        s = sigma.reshape(-1, 1, 1, 1)
        noisy = s * noise + (1.0 - s) * latents
        target = noise - latents
        # 3. prediction (timestep is already t - 1, as the pipeline passes it) and the mean squared error
        pred = self.transformer(noisy, glyph, prior_ids, prior_drop, timestep, target_size, crop_coords, rope_cos,
                                rope_sin, text_bias, cache_key, cache_value)
        diff = pred.astype(ms.float32) - target
        return mint.mean(diff * diff)


@dataclasses.dataclass
class DiTBatchMaker:
    """Prepared samples (dicts of ``PreparedDataset``) -> ``DiTFlowMatchLoss`` inputs, drawing the randomness.

    ``negative_glyph`` (T0, text_embed_dim) are the glyph embeddings of "" (what the pipeline's
    unconditional pass gets); a sample whose glyph is dropped gets them instead. Glyph embeddings of a
    batch are left-padded with zeros to the longest, rounded up to ``loss.text_bucket``, and the padding is
    masked, as the pipeline does, so a sample's loss does not depend on its batch-mates.
    """

    config: GlmImageTransformerConfig
    scheduler: FlowMatchEulerScheduler
    loss: DiTLossConfig
    negative_glyph: np.ndarray

    def __post_init__(self):
        sched = self.scheduler.config
        if sched.invert_sigmas or sched.shift_terminal:
            raise ValueError("DiT training samples sigma = shift(t / num_train_timesteps); a scheduler with "
                             "invert_sigmas or shift_terminal has no per-sample sigma: use the model's own scheduler")

    def sigmas(self, timesteps: np.ndarray, latent_shape: tuple[int, ...]) -> np.ndarray:
        """sigma of integer timesteps at this latent size: the scheduler's shift at that image's ``mu``."""
        cfg = self.scheduler.config
        mu = calculate_shift(image_seq_len(latent_shape[-2], latent_shape[-1], 1, self.config.patch_size),
                             cfg.base_image_seq_len, cfg.base_shift, cfg.max_shift)
        return self.scheduler.shift_sigmas(timesteps.astype(np.float32) / np.float32(cfg.num_train_timesteps), mu)

    def draw(self, latent_shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, np.ndarray, bool, bool]:
        """One sample's (timestep, noise, drop prior, drop glyph), drawn in this fixed order."""
        high = min(self.loss.max_timestep, self.scheduler.config.num_train_timesteps)
        t = int(rng.integers(self.loss.min_timestep, high + 1))
        noise = rng.standard_normal(latent_shape, dtype=np.float32)
        return t, noise, bool(rng.random() < self.loss.prior_drop_prob), bool(rng.random() < self.loss.glyph_drop_prob)

    def __call__(self, samples: list[dict], rngs: list[np.random.Generator]) -> tuple:
        """Inputs of one micro-batch; ``rngs`` holds one generator per sample, so a sample's noise does not
        depend on how samples are split into batches or over workers."""
        latents = _stack(samples, "latents", np.float32)
        steps, noise, drop_prior, drop_glyph = zip(*(self.draw(latents.shape[1:], rng) for rng in rngs))
        timestep = np.asarray(steps, np.float32)
        draws = {"timestep": timestep, "sigma": self.sigmas(timestep, latents.shape), "noise": np.stack(noise),
                 "drop_prior": np.asarray(drop_prior), "drop_glyph": np.asarray(drop_glyph)}
        glyphs = [self.negative_glyph if drop else s["glyph"] for s, drop in zip(samples, draws["drop_glyph"])]
        longest = bucketed(max(g.shape[0] for g in glyphs), self.loss.text_bucket)
        glyph = np.stack([np.pad(np.asarray(g, np.float32), ((longest - g.shape[0], 0), (0, 0))) for g in glyphs])
        glyph_mask = np.stack([np.arange(longest) >= longest - g.shape[0] for g in glyphs])
        prior_ids = _stack(samples, "prior_ids", np.int32)
        prior_drop = np.repeat(draws["drop_prior"][:, None], prior_ids.shape[1], 1)
        size = _stack(samples, "size", np.float32)
        main = transformer_inputs(self.config, latents, glyph, prior_ids, prior_drop,
                                  draws["timestep"] - np.float32(1), size, np.zeros_like(size), glyph_mask)
        latents_t, glyph_t, ids_t, drop_t, step_t, size_t, crop_t, cos, sin, text_bias = main
        refs = []
        for k in range(_ref_count(samples)):
            ref_lat = _stack(samples, f"ref_latents_{k}", np.float32)
            ref_ids = _stack(samples, f"ref_prior_ids_{k}", np.int32)
            ref_size = _stack(samples, f"ref_size_{k}", np.float32)
            zeros = np.zeros(len(samples), np.float32)
            r_lat, _, r_ids, _, _, r_size, _, r_cos, r_sin, _ = transformer_inputs(
                self.config, ref_lat, None, ref_ids, np.zeros(ref_ids.shape, bool), zeros, ref_size,
                np.zeros_like(ref_size))
            refs += [r_lat, r_ids, r_size, r_cos, r_sin]
        return (latents_t, graph_input("noise", draws["noise"], ms.float32),
                graph_input("sigma", draws["sigma"], ms.float32), step_t, glyph_t, ids_t, drop_t,
                size_t, crop_t, cos, sin, text_bias, *refs)


def _ref_count(samples: list[dict]) -> int:
    counts = {sum(key.startswith("ref_latents_") for key in s) for s in samples}
    if len(counts) > 1:
        raise ValueError(f"one batch mixes samples with {sorted(counts)} reference images; prepare-data's buckets "
                         "keep them apart (rerun prepare-data on data prepared before they did), or use batch_size 1")
    return counts.pop()


def _stack(samples: list[dict], key: str, dtype) -> np.ndarray:
    shapes = {np.shape(s[key]) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"samples of one batch have different '{key}' shapes {sorted(shapes)}; batch samples of "
                         "one aspect bucket (and, for editing data, the same reference sizes) or use batch_size 1")
    return np.stack([np.asarray(s[key], dtype) for s in samples])
