"""The DiT denoising loop with classifier-free guidance, as GlmImagePipeline runs it.

Each step is ONE graph call (``DenoiseStep``): one DiT pass over a doubled batch, timestep ``t - 1``: rows [0, B)
are the conditional pass (glyph embeddings, prior tokens kept, reference-image KV cache read), rows [B, 2B) the
unconditional pass (negative embeddings, prior tokens dropped, cached keys masked off by ``cache_bias``); then the
operator ``guided_euler_step`` mixes the two halves with the guidance scale in fp32 and takes the flow-match Euler
step. The loop never waits for the device: every input that does not change (prior ids, drop masks, sizes, glyph
embeddings and their mask, rotary tables, the cache, the per-step timesteps and ``dt = sigmas[i + 1] - sigmas[i]``)
is uploaded once before it, the DiT's step-invariant part (projected prior tokens and glyph
embeddings, every step's time embedding: ``prepare_denoising``) is computed once by one graph call, and the final
latents are read back once at the end.
The price of batching: one call holds both passes' activations (twice a pass's; the composite attention's
fp32 scores grow with the rows, flash attention on Ascend keeps them linear in the sequence) and, for I2I,
a second copy of the reference cache for the unconditional rows.

Non-finite numbers: a NaN/inf in the latents stays non-finite through every later Euler step, so the final
latents show whether any step failed; the step graph records on the device the first step whose latents
were not finite (and how many values), read back only then, so the error still names the step.

``DenoiseConfig(device_loop=False)`` is the host twin, shaped as the reference pipeline: two DiT calls per
step and the numpy scheduler step, every velocity read back. It is the loop the device loop is tested
against (equal to 1e-6) and the baseline of ``scripts/bench_generate.py --denoise-only``.

Both passes get their glyph embeddings left-padded with zeros to one bucketed length, the padding masked
out of attention: they then share one compiled DiT graph, and so do prompts of similar length. (Each compiled
graph keeps memory for its life - pooled buffers and, on CPU, kernel tables (README, Memory of one
generation; scripts/bench_memory.py) - so one graph per prompt length would grow without bound.) Masked keys get exactly zero weight, so results equal the unpadded ones up to
float summation order (~1e-7).
"""
from __future__ import annotations

import dataclasses

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn
from tqdm import tqdm

from ..finite import check_finite, non_finite_error
from ..graph_calls import static_graph
from ..graph_inputs import bucketed, graph_input
from ..models.dit.kv_cache import GlmImageKVCache
from ..models.dit.transformer import transformer_inputs
from ..ops import inference_cells, resolve
from ..scheduler.flow_match import FlowMatchEulerScheduler, image_seq_len


@dataclasses.dataclass(frozen=True)
class DenoiseConfig:
    num_inference_steps: int = 50
    guidance_scale: float = 1.5
    vae_scale_factor: int = 8
    crop_coords: tuple[int, int] = (0, 0)
    progress: bool = True
    text_bucket: int = 32         # glyph token counts are padded (masked) up to a multiple of this
    device_loop: bool = True      # False: the host twin (two DiT calls a step, numpy Euler step; tests, benchmarks)


@dataclasses.dataclass
class DenoiseOutput:
    latents: np.ndarray           # final latents (B, C, H/8, W/8), float32
    host_syncs: int               # device-to-host readbacks the loop made, for the whole batch


def pad_glyph(embeddings, mask: np.ndarray | None, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad (B, T, D) glyph embeddings with zeros to ``length`` tokens; the mask (B, length) is False on
    all padding (``mask`` None: none of the T tokens was padding)."""
    emb = (embeddings.astype(ms.float32).asnumpy() if isinstance(embeddings, ms.Tensor)
           else np.asarray(embeddings, np.float32))
    batch, tokens, _ = emb.shape
    keep = np.ones((batch, tokens), bool) if mask is None else np.asarray(mask, bool)
    pad = length - tokens
    return np.pad(emb, ((0, 0), (pad, 0), (0, 0))), np.pad(keep, ((0, 0), (pad, 0)))


class DenoiseStep(nn.Cell):
    """One denoising step as one graph: the DiT over the [cond | uncond] rows (``denoise_step``), then the
    operator ``guided_euler_step`` (guidance mix in fp32, the Euler step, the non-finite record). Returns the new
    latents, the next DiT input and the record. Its inputs are one step's (time embedding, ``dt``, index), so one
    graph serves every step count.

    Built inside ``inference_cells`` (never trained), so the step operator is the CPU twin there; the
    transformer is held, not copied (``auto_prefix=False`` keeps its parameter names).
    """

    def __init__(self, transformer: nn.Cell):
        super().__init__(auto_prefix=False)
        self.transformer = transformer
        with inference_cells():
            self.euler_step = resolve("guided_euler_step").fn

    def construct(self, model_input, latents, prior, text, temb, rope_cos, rope_sin, text_bias, dt, index,
                  guidance, record, *cache):
        velocity = self.transformer.denoise_step(model_input, prior, text, temb, rope_cos, rope_sin, text_bias, *cache)
        return self.euler_step(velocity, latents, dt, index, guidance, record)


def denoise(transformer: nn.Cell, scheduler: FlowMatchEulerScheduler, latents: np.ndarray, prior_ids: np.ndarray,
            glyph: np.ndarray | Tensor, negative_glyph: np.ndarray | Tensor | None, height: int, width: int,
            cfg: DenoiseConfig = DenoiseConfig(), kv_cache: GlmImageKVCache | None = None,
            glyph_mask: np.ndarray | None = None) -> DenoiseOutput:
    """Run the loop from initial noise ``latents`` (B, C, H/8, W/8).

    ``prior_ids`` (B, patches) are the upsampled AR tokens; ``negative_glyph`` may be None only when
    ``guidance_scale <= 1`` (no unconditional pass, as in the reference); ``glyph_mask`` (B, T) is False on
    the left padding of ``glyph`` (a batch of prompts whose quoted texts differ in length).
    """
    guided = cfg.guidance_scale > 1
    if guided and negative_glyph is None:
        raise ValueError("guidance_scale > 1 needs negative glyph embeddings (encode the empty prompt)")
    latents = np.asarray(latents, dtype=np.float32)
    prior_ids = np.asarray(prior_ids)
    timesteps = scheduler.set_timesteps(cfg.num_inference_steps, image_seq_len(
        height, width, cfg.vae_scale_factor, transformer.config.patch_size))
    # one padded glyph length for both passes; each pass: (embeddings, mask, prior tokens dropped)
    longest = max(glyph.shape[1], negative_glyph.shape[1] if guided else 0)
    text_len = bucketed(longest, cfg.text_bucket)
    passes = [(*pad_glyph(glyph, glyph_mask, text_len), False)]
    if guided:
        passes.append((*pad_glyph(negative_glyph, None, text_len), True))
    loop = _device_loop if cfg.device_loop else _host_loop
    return loop(transformer, scheduler, latents, prior_ids, passes, timesteps, height, width, cfg, kv_cache)


def _sizes(rows: int, height: int, width: int, cfg: DenoiseConfig) -> tuple[np.ndarray, np.ndarray]:
    """(target_size, crop_coords), each (rows, 2) float32."""
    return (np.tile(np.asarray([[height, width]], np.float32), (rows, 1)),
            np.tile(np.asarray([cfg.crop_coords], np.float32), (rows, 1)))


def _device_loop(transformer, scheduler, latents, prior_ids, passes, timesteps, height, width, cfg, kv_cache):
    """One DiT call a step over the passes' rows stacked ([cond | uncond]); latents stay on the device."""
    batch, guided = latents.shape[0], len(passes) == 2
    rows, steps = len(passes) * batch, len(timesteps)
    # 1. everything the loop reads but never changes, on the device: the inputs checked as one DiT call's, then
    # the DiT's step-invariant part (projected prior tokens and glyph embeddings, every step's time embedding)
    # computed by one graph call; [cond | uncond] rows
    target, crop = _sizes(rows, height, width, cfg)
    drop = np.concatenate([np.full(prior_ids.shape, dropped) for _, _, dropped in passes])
    step_t = np.stack([np.full(rows, t, dtype=np.float32) - np.float32(1) for t in timesteps])  # (steps, rows)
    (model_input, glyph, prior_id, prior_drop, _, _, _, rope_cos, rope_sin, text_bias) = transformer_inputs(
        transformer.config, np.concatenate([latents] * len(passes)), np.concatenate([p[0] for p in passes]),
        np.concatenate([prior_ids] * len(passes)), drop, step_t[0], target, crop,
        np.concatenate([p[1] for p in passes]))
    prior, text, temb = static_graph(transformer, "prepare_denoising")(
        glyph, prior_id, prior_drop, Tensor(step_t.reshape(-1)), Tensor(np.tile(target, (steps, 1))),
        Tensor(np.tile(crop, (steps, 1))))
    temb = mint.unbind(temb, 0)  # one (rows, D) tensor a step: the step graph stays the same for any step count
    cache = (() if kv_cache is None else
             kv_cache.read_inputs_guided(batch) if guided else kv_cache.read_inputs(batch))
    sigmas = np.asarray(scheduler.sigmas, np.float32)
    dts = [Tensor(d) for d in sigmas[1:] - sigmas[:-1]]  # fp32, rounded as the device would subtract them
    indices = [Tensor(i, ms.int32) for i in range(steps)]
    guidance = Tensor(np.float32(cfg.guidance_scale))
    step = static_graph(transformer, wrapper=DenoiseStep)
    # 2. the loop: one graph call per step (DiT and sampler step), nothing read back
    x, record = graph_input("latents", latents, ms.float32), Tensor(np.array([-1, 0], np.int32))
    for i in tqdm(range(steps), desc="denoise", disable=not cfg.progress):
        x, model_input, record = step(model_input, x, prior, text, temb[i], rope_cos, rope_sin, text_bias, dts[i],
                                      indices[i], guidance, record, *cache)
    # 3. one readback; the record only when something went non-finite
    final = x.asnumpy()
    if not np.isfinite(final).all():
        first, bad = (int(v) for v in record.asnumpy())
        raise non_finite_error(f"denoising step {first + 1}/{steps} (DiT velocity)", bad, final.size)
    return DenoiseOutput(final, host_syncs=1)


def _host_loop(transformer, scheduler, latents, prior_ids, passes, timesteps, height, width, cfg, kv_cache):
    """The twin: one DiT call per pass a step, each velocity read back, guidance and Euler step in numpy."""
    batch = latents.shape[0]
    target, crop = _sizes(batch, height, width, cfg)
    cache_inputs = kv_cache.read_inputs(batch) if kv_cache is not None else ()
    syncs = 0
    for i, t in enumerate(tqdm(timesteps, desc="denoise", disable=not cfg.progress)):
        step_t = np.full(batch, t, dtype=np.float32) - np.float32(1)
        velocities = []
        for embeddings, mask, dropped in passes:  # the unconditional pass skips the cache
            velocities.append(transformer(
                *transformer_inputs(transformer.config, latents, embeddings, prior_ids,
                                    np.full(prior_ids.shape, dropped), step_t, target, crop, mask),
                *(() if dropped else cache_inputs)).asnumpy().astype(np.float32))
            syncs += 1
        velocity = velocities[0]
        if len(velocities) == 2:
            cond, uncond = velocities
            velocity = uncond + np.float32(cfg.guidance_scale) * (cond - uncond)
        latents = check_finite(scheduler.step(velocity, i, latents),
                               f"denoising step {i + 1}/{len(timesteps)} (DiT velocity)")
    return DenoiseOutput(latents, syncs)
