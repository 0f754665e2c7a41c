"""Scheduler parity: GlmImagePipeline's schedule and FlowMatchEulerDiscreteScheduler.step vs our numpy port."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mindglm_image.config.base import ConfigError
from mindglm_image.scheduler.flow_match import (
    FlowMatchEulerScheduler,
    FlowMatchEulerSchedulerConfig,
    image_seq_len,
)
from parity_utils import assert_parity

CONFIGS = ("linear", "exponential", "static", "terminal", "inverted")
SIZES = [(512, 512, 50), (1024, 1024, 30), (768, 1344, 10), (2048, 2048, 4)]
CUSTOM = {
    "custom_sigmas": (1024, 1024, 4, None, [1.0, 0.75, 0.5, 0.25]),
    "custom_timesteps": (1024, 1024, 4, [999.0, 700.5, 400.0, 100.0], None),
}


@pytest.fixture(scope="module")
def reference(reference_fixture):
    folder = reference_fixture("scheduler")
    return folder, dict(np.load(folder / "scheduler.npz"))


@pytest.mark.parity
@pytest.mark.parametrize("name", CONFIGS)
def test_schedule_matches_pipeline(reference, name, parity_report):
    folder, ref = reference
    scheduler = FlowMatchEulerScheduler.from_folder(folder / name)
    cases = {f"{h}x{w}x{s}": (h, w, s, None, None) for h, w, s in SIZES} | CUSTOM
    for case, (h, w, steps, timesteps, sigmas) in cases.items():
        key = f"{name}__{case}"
        ours = scheduler.set_timesteps(steps, image_seq_len(h, w), timesteps=timesteps, sigmas=sigmas)
        assert ours.dtype == np.float32 and scheduler.sigmas.dtype == np.float32
        np.testing.assert_array_equal(ours, ref[f"{key}__timesteps"], err_msg=key)
        assert scheduler.mu == float(ref[f"{key}__mu"]), key
        assert_parity(parity_report, f"scheduler/{name}_sigmas", scheduler.sigmas, ref[f"{key}__sigmas"], 1e-6)
        np.testing.assert_array_equal(scheduler.sigmas, ref[f"{key}__sigmas"], err_msg=key)


@pytest.mark.parity
@pytest.mark.parametrize("name", CONFIGS)
def test_euler_steps_match_reference(reference, name, parity_report):
    folder, ref = reference
    scheduler = FlowMatchEulerScheduler.from_folder(folder / name)
    timesteps = scheduler.set_timesteps(10, image_seq_len(768, 1344))
    latents = ref[f"{name}__euler__start"]
    velocities = ref[f"{name}__euler__velocities"]
    expected = ref[f"{name}__euler__trajectory"]
    for i in range(len(timesteps)):
        latents = scheduler.step(velocities[i], i, latents)
        assert latents.dtype == np.float32
        assert_parity(parity_report, f"scheduler/{name}_euler", latents, expected[i], 1e-6)
    np.testing.assert_array_equal(latents, expected[-1])


def test_config_round_trips_and_rejects_unsupported(reference):
    folder, _ = reference
    original = json.loads((folder / "linear" / "scheduler_config.json").read_text())
    assert FlowMatchEulerSchedulerConfig.from_dict(original).to_dict() == original
    with pytest.raises(ConfigError, match="use_karras_sigmas"):
        FlowMatchEulerSchedulerConfig.from_dict({**original, "use_karras_sigmas": True})
    with pytest.raises(ConfigError, match="time_shift_type"):
        FlowMatchEulerSchedulerConfig.from_dict({**original, "time_shift_type": "cosine"})


def test_bad_arguments_are_rejected():
    scheduler = FlowMatchEulerScheduler(FlowMatchEulerSchedulerConfig())
    with pytest.raises(ValueError, match="sigmas has 2 values"):
        scheduler.set_timesteps(3, 256, sigmas=[1.0, 0.5])
    scheduler.set_timesteps(3, 256)
    with pytest.raises(IndexError, match="outside the schedule"):
        scheduler.step(np.zeros(4, np.float32), 3, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="model_output shape"):
        scheduler.step(np.zeros(4, np.float32), 0, np.zeros(5, np.float32))
