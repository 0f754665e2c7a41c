"""A whole CFG denoising loop (DiT + flow-match scheduler) from the same noise equals the reference pipeline's;
the device loop (batched CFG, Euler step on the device) equals its host twin (two DiT calls a step)."""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest

from mindglm_image.config.dit import GlmImageTransformerConfig
from mindglm_image.finite import NonFiniteError
from mindglm_image.models.dit.kv_cache import GlmImageKVCache
from mindglm_image.models.dit.transformer import GlmImageTransformer2DModel
from mindglm_image.graph_calls import static_graph
from mindglm_image.pipeline import denoise as denoise_module
from mindglm_image.pipeline.denoise import DenoiseConfig, DenoiseStep, denoise
from mindglm_image.scheduler.flow_match import FlowMatchEulerScheduler, FlowMatchEulerSchedulerConfig
from parity_utils import assert_parity, load_converted, rel_error


@pytest.mark.parity
def test_cfg_loop_matches_pipeline(reference_fixture, parity_report, tmp_path):
    folder = reference_fixture("denoise_loop")
    data = np.load(folder / "loop.npz")
    transformer = load_converted("transformer", folder / "transformer", tmp_path)
    scheduler = FlowMatchEulerScheduler.from_folder(folder / "scheduler")
    final = denoise(transformer, scheduler, data["latents"], data["prior_ids"], data["glyph"], data["negative"],
                    64, 96, DenoiseConfig(num_inference_steps=4, guidance_scale=1.5, progress=False)).latents
    np.testing.assert_array_equal(scheduler.timesteps, data["timesteps"])
    np.testing.assert_array_equal(scheduler.sigmas, data["sigmas"])
    assert np.abs(final - data["latents"]).max() > 0.1  # the loop moved the latents
    assert_parity(parity_report, "denoise_loop/final_latents", final, data["final"], tol=1e-4)


def test_guidance_needs_negative_embeddings(tmp_path):
    class Stub:
        config = None

    with pytest.raises(ValueError, match="negative glyph embeddings"):
        denoise(Stub(), None, np.zeros((1, 4, 8, 8)), np.zeros((1, 16)), np.zeros((1, 2, 4)), None, 64, 64,
                DenoiseConfig(guidance_scale=2.0))


# --- the device loop (one batched CFG call a step, Euler step on the device) against its host twin ---

DIT = dict(patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
           text_embed_dim=24, time_embed_dim=32, condition_dim=8, prior_vq_quantizer_codebook_size=64)


@pytest.fixture(scope="module")
def dit():
    """A random 2-block DiT: every parameter random (the defaults zero some), activations O(1)."""
    model = GlmImageTransformer2DModel(GlmImageTransformerConfig.from_dict(DIT))
    rng = np.random.default_rng(0)
    for param in model.get_parameters():
        std = 1.0 / np.sqrt(param.shape[1]) if len(param.shape) == 2 else 0.2
        param.set_data(ms.Tensor((std * rng.standard_normal(param.shape)).astype(np.float32)))
    return model


def _scheduler():
    return FlowMatchEulerScheduler(FlowMatchEulerSchedulerConfig(use_dynamic_shifting=True, base_shift=0.25,
                                                                 max_shift=0.75, time_shift_type="linear"))


def _request(batch, rng, glyph_lengths=(5,)):
    """Noise, prior ids and glyph embeddings for a 64 x 96 image batch; glyph rows left-padded to the longest."""
    width = max(glyph_lengths)
    glyph = rng.standard_normal((batch, width, DIT["text_embed_dim"]), dtype=np.float32)
    mask = np.ones((batch, width), bool)
    for row, length in enumerate(glyph_lengths * (batch // len(glyph_lengths))):
        glyph[row, :width - length], mask[row, :width - length] = 0, False
    return dict(latents=rng.standard_normal((batch, 4, 8, 12), dtype=np.float32),
                prior_ids=rng.integers(0, DIT["prior_vq_quantizer_codebook_size"], (batch, 24)),
                glyph=glyph, negative_glyph=rng.standard_normal((batch, 1, DIT["text_embed_dim"]), dtype=np.float32),
                glyph_mask=mask)


def _cache(dit, rng, samples):
    cache = GlmImageKVCache(dit)
    for _ in range(samples):
        cache.write(rng.standard_normal((1, 4, 8, 8), dtype=np.float32), rng.integers(0, 64, (1, 16)), (64, 64))
        cache.next_sample()
    return cache


def _both_loops(dit, request, steps, guidance, cache=None):
    runs = {}
    for device_loop in (True, False):
        cfg = DenoiseConfig(num_inference_steps=steps, guidance_scale=guidance, progress=False, device_loop=device_loop)
        runs[device_loop] = denoise(dit, _scheduler(), height=64, width=96, cfg=cfg, kv_cache=cache, **request)
    return runs[True], runs[False]


@pytest.mark.parametrize("case", ["t2i", "i2i_batch"])
def test_batched_cfg_equals_the_two_call_loop(dit, case):
    """One DiT call over [cond | uncond] rows and the Euler step on the device give the latents of the host
    loop's two calls a step (the uncond rows must not see the reference cache); one readback instead of 2 a step."""
    rng = np.random.default_rng(1)
    batch, cache = (1, None) if case == "t2i" else (4, _cache(dit, rng, 2))  # i2i: 2 cached samples, 2 images each
    request = _request(batch, rng, (5,) if case == "t2i" else (5, 2))
    device, host = _both_loops(dit, request, 4, 2.5, cache)
    assert rel_error(device.latents, host.latents) <= 1e-6
    assert (device.host_syncs, host.host_syncs) == (1, 2 * 4)
    assert np.abs(device.latents - request["latents"]).max() > 0.1  # the loop moved the latents
    if cache is not None:  # the cache matters, and only through the conditional rows
        without = denoise(dit, _scheduler(), height=64, width=96, cfg=DenoiseConfig(4, 2.5, progress=False),
                          **request).latents
        assert rel_error(device.latents, without) > 1e-2


def test_unguided_loop_with_cache_equals_host_loop(dit):
    rng = np.random.default_rng(2)
    request = _request(2, rng)
    device, host = _both_loops(dit, {**request, "negative_glyph": None}, 3, 1.0, _cache(dit, rng, 1))
    assert rel_error(device.latents, host.latents) <= 1e-6
    assert (device.host_syncs, host.host_syncs) == (1, 3)


class _NonFiniteAtCall:
    """A call whose ``k``-th call goes non-finite in one value (a stand-in for an overflow mid-loop): the host
    loop's DiT returns inf in one velocity value; the device loop's step graph (DiT and sampler step in one
    graph) gets inf in one value of its ``latents`` input, so the step's own check must find and record it."""

    def __init__(self, call, k, poison_input: int | None = None):
        self.call, self.config, self.k, self.calls = call, getattr(call, "config", None), k, 0
        self.poison_input = poison_input  # which input to poison, None: the output

    @staticmethod
    def _poisoned(tensor):
        values = tensor.asnumpy().copy()
        values.flat[0] = np.inf
        return ms.Tensor(values)

    def __call__(self, *inputs):
        self.calls += 1
        if self.calls == self.k and self.poison_input is not None:
            i = self.poison_input
            inputs = (*inputs[:i], self._poisoned(inputs[i]), *inputs[i + 1:])
        out = self.call(*inputs)
        return self._poisoned(out) if self.calls == self.k and self.poison_input is None else out


@pytest.mark.parametrize("device_loop", [True, False])
def test_non_finite_velocity_names_its_step(dit, device_loop, monkeypatch):
    """A step that goes non-finite is named, also when the device loop only finds it in the final latents."""
    request = _request(1, np.random.default_rng(3))
    calls_per_step = 1 if device_loop else 2
    k = 2 * calls_per_step + 1  # the first call of step 3
    model = dit
    if device_loop:  # the device loop calls one step graph a step, through static_graph(..., wrapper=DenoiseStep)
        step = _NonFiniteAtCall(static_graph(dit, wrapper=DenoiseStep), k, poison_input=1)
        monkeypatch.setattr(denoise_module, "static_graph", lambda cell, method="construct", wrapper=None: (
            step if wrapper is DenoiseStep else static_graph(cell, method, wrapper)))
    else:
        model = _NonFiniteAtCall(dit, k)
    cfg = DenoiseConfig(num_inference_steps=4, guidance_scale=1.5, progress=False, device_loop=device_loop)
    with pytest.raises(NonFiniteError, match=r"denoising step 3/4 \(DiT velocity\) produced 1 non-finite values"):
        denoise(model, _scheduler(), height=64, width=96, cfg=cfg, **request)
