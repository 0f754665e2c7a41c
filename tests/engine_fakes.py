"""A stand-in pipeline for the engine's tests: the public stage API, instant, scriptable by prompt text.

Prompts containing ``nan-ar`` / ``nan-dit`` raise ``NonFiniteError`` in that stage, ``die`` SIGKILLs the DiT
worker, ``hold`` makes the DiT stage wait for the file ``gate``. Each stage appends one line per call to
``log`` (``ar <prompts>`` / ``dit <prompts>``), so a test can watch how far a stage got.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from mindglm_image.finite import NonFiniteError


@dataclasses.dataclass
class FakeTimings:
    ar_seconds: float = 0.0
    ar_tokens: int = 0


class FakePipeline:
    def __init__(self, log: Path, gate: Path):
        self.log, self.gate = log, gate

    def _note(self, line: str) -> None:
        with open(self.log, "a") as fh:
            fh.write(line + "\n")

    def sampling_config(self, **overrides):
        return overrides

    def generate_prior(self, prompts, height, width, sampling, reference_ids=None, grids=None, progress=True,
                       row_seeds=None):
        self._note("ar " + " ".join(prompts))
        if any("nan-ar" in p for p in prompts):
            raise NonFiniteError("AR prior (token 1 logits) produced 3 non-finite values (NaN/inf)")
        return SimpleNamespace(prior_ids=np.asarray(row_seeds, np.int64)[:, None], generated=np.zeros((len(prompts), 5)))

    def __call__(self, prompt, image=None, height=64, width=64, num_inference_steps=2, guidance_scale=1.5, seed=0,
                 prior_token_ids=None, num_images_per_prompt=1, progress=True):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        text = " ".join(prompts)
        self._note("dit " + text)
        if "die" in text:
            os.kill(os.getpid(), signal.SIGKILL)
        if "nan-dit" in text:
            raise NonFiniteError("denoising step 1/2 (DiT velocity) produced 4 non-finite values (NaN/inf)")
        while "hold" in text and not self.gate.exists():
            time.sleep(0.05)
        images = []
        for row in prior_token_ids:  # each prompt's prior reaches its images
            images += [Image.fromarray(np.full((4, 4, 3), int(row[0]) % 256, np.uint8))] * num_images_per_prompt
        return SimpleNamespace(images=images, timings=FakeTimings())


@dataclasses.dataclass(frozen=True)
class FakeLoader:
    folder: str
    broken: bool = False

    def __call__(self, threads):
        if self.broken:
            raise FileNotFoundError("no model here")
        return FakePipeline(Path(self.folder) / "log", Path(self.folder) / "gate")
