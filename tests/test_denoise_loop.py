"""A whole CFG denoising loop (DiT + flow-match scheduler) from the same noise equals the reference pipeline's."""
from __future__ import annotations

import numpy as np
import pytest

from mindglm_image.pipeline.denoise import DenoiseConfig, denoise
from mindglm_image.scheduler.flow_match import FlowMatchEulerScheduler
from parity_utils import assert_parity, load_converted


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
