"""Flow-matching Euler sampler with GLM-Image's resolution-dependent schedule, in numpy on the host.

The schedule is built as GlmImagePipeline builds it before calling diffusers'
``FlowMatchEulerDiscreteScheduler.set_timesteps(timesteps=..., sigmas=..., mu=...)``:

* timesteps ``linspace(num_train_timesteps, 1, steps + 1)[:-1]`` truncated to integers (kept as float32);
* sigmas ``timesteps / num_train_timesteps`` shifted by ``mu``, which grows with the square root of the
  image sequence length (``calculate_shift``), optionally stretched to ``shift_terminal``; a terminal
  sigma (0, or 1 when ``invert_sigmas``) is appended;
* the timesteps themselves are NOT shifted (the DiT is called with ``t - 1``).

Every array op is float32 in the order the reference uses, so values match it bit for bit.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config.base import ConfigError, HFConfig

CONFIG_NAME = "scheduler_config.json"

_F1 = np.float32(1.0)


@dataclasses.dataclass
class FlowMatchEulerSchedulerConfig(HFConfig):
    """``scheduler/scheduler_config.json``: diffusers 0.42.1 FlowMatchEulerDiscreteScheduler's fields and defaults."""

    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float | None = 0.5
    max_shift: float | None = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    invert_sigmas: bool = False
    shift_terminal: float | None = None
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    time_shift_type: str = "exponential"
    stochastic_sampling: bool = False

    def validate(self) -> None:
        if self.num_train_timesteps < 1:
            raise ConfigError(f"scheduler.num_train_timesteps={self.num_train_timesteps} must be positive")
        if self.time_shift_type not in ("exponential", "linear"):
            raise ConfigError(f"scheduler.time_shift_type={self.time_shift_type!r}: use 'exponential' or 'linear'")
        if self.base_shift is None or self.max_shift is None:
            raise ConfigError("scheduler: GLM-Image computes its shift from base_shift and max_shift; "
                              "give both numbers in scheduler_config.json")
        if self.shift_terminal is not None and self.shift_terminal >= 1.0:
            raise ConfigError(f"scheduler.shift_terminal={self.shift_terminal} must be below 1")
        unsupported = [name for name in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                                         "stochastic_sampling") if getattr(self, name)]
        if unsupported:
            raise ConfigError(f"scheduler: {unsupported} not supported (GLM-Image samples with deterministic Euler "
                              "steps on its own sigmas); set them to false")


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, base_shift: float = 0.25,
                    max_shift: float = 0.75) -> float:
    """GLM-Image's shift mu: ``sqrt(image_seq_len / base_seq_len) * max_shift + base_shift`` (python float)."""
    return (image_seq_len / base_seq_len) ** 0.5 * max_shift + base_shift


def image_seq_len(height: int, width: int, vae_scale_factor: int = 8, patch_size: int = 2) -> int:
    """Number of DiT patches for an image of ``height x width`` pixels (the pipeline's formula)."""
    return ((height // vae_scale_factor) * (width // vae_scale_factor)) // patch_size**2


class FlowMatchEulerScheduler:
    """Holds one schedule (``timesteps``: (steps,), ``sigmas``: (steps + 1,), float32) and steps along it."""

    def __init__(self, config: FlowMatchEulerSchedulerConfig):
        self.config = config
        self.timesteps = np.zeros(0, np.float32)
        self.sigmas = np.zeros(0, np.float32)
        self.mu = 0.0

    @classmethod
    def from_folder(cls, folder: str | Path) -> "FlowMatchEulerScheduler":
        """Read ``folder/scheduler_config.json`` (the checkpoint's ``scheduler/`` subfolder)."""
        return cls(FlowMatchEulerSchedulerConfig.from_json_file(Path(folder) / CONFIG_NAME))

    def set_timesteps(self, num_inference_steps: int, seq_len: int, timesteps: Sequence[float] | None = None,
                      sigmas: Sequence[float] | None = None) -> np.ndarray:
        """Build the schedule for ``num_inference_steps`` steps at ``seq_len`` DiT patches (see ``image_seq_len``).

        ``timesteps``/``sigmas`` override the defaults as the pipeline's arguments of the same names do.
        Returns the timesteps to feed the loop; the DiT gets ``t - 1``.
        """
        cfg = self.config
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={num_inference_steps} must be at least 1")
        for name, values in (("timesteps", timesteps), ("sigmas", sigmas)):
            if values is not None and len(values) != num_inference_steps:
                raise ValueError(f"{name} has {len(values)} values but num_inference_steps={num_inference_steps}; "
                                 "give one value per step")
        n = cfg.num_train_timesteps
        if timesteps is None:
            timesteps = np.linspace(n, 1.0, num_inference_steps + 1)[:-1]
        timesteps = np.asarray(timesteps).astype(np.int64).astype(np.float32)
        if sigmas is None:
            sig = timesteps / np.float32(n)
        else:
            sig = np.asarray(sigmas).astype(np.float32)
        self.mu = calculate_shift(seq_len, cfg.base_image_seq_len, cfg.base_shift, cfg.max_shift)
        sig = self.shift_sigmas(sig, self.mu)
        if cfg.shift_terminal:
            one_minus = _F1 - sig
            sig = _F1 - one_minus / (one_minus[-1] / np.float32(1.0 - cfg.shift_terminal))
        if cfg.invert_sigmas:
            sig = _F1 - sig
            timesteps = sig * np.float32(n)
            sig = np.concatenate([sig, np.ones(1, np.float32)])
        else:
            sig = np.concatenate([sig, np.zeros(1, np.float32)])
        self.timesteps, self.sigmas = timesteps, sig
        return timesteps

    def shift_sigmas(self, sig: np.ndarray, mu: float) -> np.ndarray:
        """Resolution shift of float32 sigmas at ``mu`` (``calculate_shift``); training samples sigmas with it too."""
        cfg = self.config
        if not cfg.use_dynamic_shifting:
            return np.float32(cfg.shift) * sig / (_F1 + np.float32(cfg.shift - 1.0) * sig)
        # time shift with exponent 1 (the only one diffusers uses): a / (a + (1/t - 1))
        a = np.float32(math.exp(mu) if cfg.time_shift_type == "exponential" else mu)
        return a / (a + (_F1 / sig - _F1))

    def step(self, model_output: np.ndarray, step_index: int, sample: np.ndarray) -> np.ndarray:
        """One Euler step from ``sigmas[i]`` to ``sigmas[i + 1]``: ``sample + (sigma_next - sigma) * velocity``.

        ``step_index`` is the loop index ``i`` of ``timesteps[i]`` (the reference finds the same index from
        the timestep). Inputs are cast to float32 like the pipeline's ``.float()``; returns float32.
        """
        if not 0 <= step_index < len(self.timesteps):
            raise IndexError(f"step_index={step_index} outside the schedule of {len(self.timesteps)} steps; "
                             "call set_timesteps first")
        model_output = np.asarray(model_output, np.float32)
        sample = np.asarray(sample, np.float32)
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output shape {model_output.shape} != sample shape {sample.shape}")
        dt = self.sigmas[step_index + 1] - self.sigmas[step_index]
        return sample + dt * model_output
