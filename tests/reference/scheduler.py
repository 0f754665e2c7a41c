"""Reference fixture for the scheduler: GlmImagePipeline's timestep/sigma schedule (its own calculate_shift and
retrieve_timesteps on a real FlowMatchEulerDiscreteScheduler) for several configs and sizes, plus Euler steps."""
from __future__ import annotations

import numpy as np
import torch
from common import out_dir, save_arrays, seed_all
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.glm_image.pipeline_glm_image import calculate_shift, retrieve_timesteps

VAE_SCALE, PATCH = 8, 2  # the real model's VAE factor and DiT patch size

CONFIGS = {
    "linear": dict(use_dynamic_shifting=True, time_shift_type="linear", base_shift=0.25, max_shift=0.75),
    "exponential": dict(use_dynamic_shifting=True, base_shift=0.25, max_shift=0.75),
    "static": dict(shift=3.0),
    "terminal": dict(use_dynamic_shifting=True, base_shift=0.25, max_shift=0.75, shift_terminal=0.02),
    "inverted": dict(shift=2.0, invert_sigmas=True),
}
SIZES = [(512, 512, 50), (1024, 1024, 30), (768, 1344, 10), (2048, 2048, 4)]
CUSTOM = {  # (height, width, steps, timesteps, sigmas) as a user may pass them to the pipeline
    "custom_sigmas": (1024, 1024, 4, None, [1.0, 0.75, 0.5, 0.25]),
    "custom_timesteps": (1024, 1024, 4, [999.0, 700.5, 400.0, 100.0], None),
}


def pipeline_schedule(scheduler, height, width, steps, timesteps=None, sigmas=None):
    """The lines of GlmImagePipeline.__call__ that prepare the schedule, with its own helper functions."""
    cfg = scheduler.config
    seq_len = ((height // VAE_SCALE) * (width // VAE_SCALE)) // (PATCH**2)
    timesteps = np.linspace(cfg.num_train_timesteps, 1.0, steps + 1)[:-1] if timesteps is None else np.array(timesteps)
    timesteps = timesteps.astype(np.int64).astype(np.float32)
    sigmas = timesteps / cfg.num_train_timesteps if sigmas is None else sigmas
    mu = calculate_shift(seq_len, cfg.get("base_image_seq_len", 256), cfg.get("base_shift", 0.25),
                         cfg.get("max_shift", 0.75))
    timesteps, _ = retrieve_timesteps(scheduler, steps, "cpu", timesteps, sigmas, mu=mu)
    return timesteps, scheduler.sigmas, mu


def main() -> None:
    out = out_dir()
    seed_all(0)
    arrays = {}
    for name, kwargs in CONFIGS.items():
        scheduler = FlowMatchEulerDiscreteScheduler(**kwargs)
        scheduler.save_config(out / name)
        cases = {f"{h}x{w}x{s}": (h, w, s, None, None) for h, w, s in SIZES} | CUSTOM
        for case, (h, w, s, ts, sig) in cases.items():
            timesteps, sigmas, mu = pipeline_schedule(scheduler, h, w, s, ts, sig)
            arrays[f"{name}__{case}__timesteps"] = timesteps
            arrays[f"{name}__{case}__sigmas"] = sigmas
            arrays[f"{name}__{case}__mu"] = np.array(mu, np.float64)
        # Euler loop of the pipeline with fixed velocities
        timesteps, _, _ = pipeline_schedule(scheduler, 768, 1344, 10)
        latents = torch.randn(1, 16, 6, 8)
        velocities = torch.randn(len(timesteps), 1, 16, 6, 8)
        arrays[f"{name}__euler__start"] = latents
        arrays[f"{name}__euler__velocities"] = velocities
        trajectory = []
        for i, t in enumerate(timesteps):
            latents = scheduler.step(velocities[i].float(), t, latents, return_dict=False)[0]
            trajectory.append(latents)
        arrays[f"{name}__euler__trajectory"] = torch.stack(trajectory)
    save_arrays(out / "scheduler.npz", **arrays)


if __name__ == "__main__":
    main()
