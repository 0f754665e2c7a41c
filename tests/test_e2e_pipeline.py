"""End to end against the unmodified GlmImagePipeline on the tiny model that `make-tiny` writes.

Greedy AR tokens must be identical (T2I, I2I with one and two reference images); the final image from
the same prior tokens and initial noise must match within 1e-4 (float pixels before uint8 rounding).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mindglm_image.generation.sampling import SamplingConfig
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.tiny_model import make_tiny_model
from parity_utils import assert_parity

GREEDY = SamplingConfig(do_sample=False)
pytestmark = [pytest.mark.parity, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("e2e") / "tiny")


@pytest.fixture(scope="module")
def ref(reference_run, tiny):
    out = reference_run("e2e_pipeline", str(tiny))
    return out, dict(np.load(out / "e2e.npz")), json.loads((out / "e2e.json").read_text())


@pytest.fixture(scope="module")
def pipe(tiny):
    return GlmImagePipeline.from_pretrained(tiny)


def test_t2i_greedy_prior_tokens_equal_reference(pipe, ref):
    _, data, meta = ref
    prior = pipe.generate_prior([meta["prompt"]], meta["height"], meta["width"], GREEDY, progress=False)
    np.testing.assert_array_equal(prior.prior_ids, data["t2i_prior"])


def test_batch_of_prompts_greedy_tokens_equal_reference(pipe, ref):
    _, data, meta = ref
    prior = pipe.generate_prior([meta["prompt"], "a blue bird"], meta["height"], meta["width"], GREEDY, progress=False)
    np.testing.assert_array_equal(prior.prior_ids, data["batch_prior"])


def test_t2i_image_matches_reference(pipe, ref, parity_report):
    _, data, meta = ref
    out = pipe(meta["prompt"], height=meta["height"], width=meta["width"], num_inference_steps=meta["steps"],
               guidance_scale=meta["guidance"], prior_token_ids=data["t2i_prior"], latents=data["latents"], progress=False)
    assert out.pixels.shape == (1, meta["height"], meta["width"], 3) and out.images[0].size == (meta["width"], meta["height"])
    assert_parity(parity_report, "pipeline/t2i_pixels", out.pixels, data["t2i_pixels"], tol=1e-4)


def test_two_images_per_prompt_match_reference(pipe, ref, parity_report):
    _, data, meta = ref
    out = pipe(meta["prompt"], height=meta["height"], width=meta["width"], num_inference_steps=meta["steps"],
               guidance_scale=meta["guidance"], prior_token_ids=data["t2i_prior"], latents=data["latents2"],
               num_images_per_prompt=2, progress=False)
    assert len(out.images) == 2 and np.abs(out.pixels[0] - out.pixels[1]).max() > 0.01
    assert_parity(parity_report, "pipeline/t2i_two_images_pixels", out.pixels, data["t2i_two_pixels"], tol=1e-4)


@pytest.mark.parametrize("name", ["i2i1", "i2i2"])
def test_i2i_greedy_tokens_and_image_match_reference(pipe, ref, parity_report, name):
    folder, data, meta = ref
    refs = [Image.open(folder / f"{name}_ref{i}.png").convert("RGB") for i in range(len(meta[name]["sizes"]))]
    ids, grids, upsampled = pipe.encode_references([refs])
    np.testing.assert_array_equal(np.concatenate(upsampled[0]), data[f"{name}_ref_ids"])
    assert grids[0] == [g for g in meta[name]["grid"][:-1]]
    prior = pipe.generate_prior([meta["prompt"]], meta["height"], meta["width"], GREEDY, ids, grids, progress=False)
    np.testing.assert_array_equal(prior.generated[0], data[f"{name}_generated"])
    np.testing.assert_array_equal(prior.prior_ids, data[f"{name}_prior"])
    out = pipe(meta["prompt"], image=refs, height=meta["height"], width=meta["width"], num_inference_steps=meta["steps"],
               guidance_scale=meta["guidance"], sampling=GREEDY, latents=data["latents"], progress=False)
    np.testing.assert_array_equal(out.prior.prior_ids, data[f"{name}_prior"])
    assert_parity(parity_report, f"pipeline/{name}_pixels", out.pixels, data[f"{name}_pixels"], tol=1e-4)


@pytest.mark.parametrize("mode", ["fused", "composite"])
def test_kernel_modes_match_reference(ref, tiny, parity_report, monkeypatch, mode):
    """The whole model in each kernel mode (the pipeline's CPU default is fused: every C++ twin; composite: the
    oracle compositions): the two-reference edit (vision encoder, AR prefill and decode over the static cache,
    DiT with the reference-image cache, glyph T5, VAE) gives the reference's greedy tokens and its picture
    within 1e-4. Fused lifts the Linear kernel's weight floor, so that the tiny model's few-row products (AR
    decode, timestep embeddings) run it, as a real model's do."""
    from mindglm_image.ops import attention, cpu_twins

    folder, data, meta = ref
    monkeypatch.setenv("MINDGLM_KERNELS", mode)
    monkeypatch.setattr(cpu_twins, "LINEAR_MIN_WEIGHT", 0)
    pipe = GlmImagePipeline.from_pretrained(tiny)
    dit_attention = pipe.transformer.transformer_blocks[0].attn1.attention
    decode_linear = pipe.vision_language_encoder.model.language_model.layers[0].mlp.down_proj.linear
    if mode == "fused":
        assert isinstance(dit_attention, cpu_twins.AttentionTwin) and isinstance(decode_linear, cpu_twins.LinearTwin)
        assert cpu_twins.linear_uses_kernel((1, 1, 64), (128, 64))
    else:
        assert dit_attention is attention.attention and not isinstance(decode_linear, cpu_twins.LinearTwin)
    refs = [Image.open(folder / f"i2i2_ref{i}.png").convert("RGB") for i in range(len(meta["i2i2"]["sizes"]))]
    out = pipe(meta["prompt"], image=refs, height=meta["height"], width=meta["width"], num_inference_steps=meta["steps"],
               guidance_scale=meta["guidance"], sampling=GREEDY, latents=data["latents"], progress=False)
    np.testing.assert_array_equal(out.prior.prior_ids, data["i2i2_prior"])
    name = "i2i2_pixels_cpu_twins" if mode == "fused" else "i2i2_pixels_composite"
    assert_parity(parity_report, f"pipeline/{name}", out.pixels, data["i2i2_pixels"], tol=1e-4)


def test_bad_requests_are_named(pipe, tiny, tmp_path):
    with pytest.raises(ValueError, match="not a multiple of 32"):
        pipe("x", height=100, width=64)
    with pytest.raises(ValueError, match="outside the supported range"):
        pipe("x", height=8192, width=64)
    with pytest.raises(ValueError, match="cannot read image"):
        pipe("x", image=str(tmp_path / "missing.png"), height=64, width=64)
    with pytest.raises(FileNotFoundError, match="missing"):
        GlmImagePipeline.from_pretrained(tmp_path)
