"""Reference fixture for the real checkpoint's small files (configs/glm_image/): parameter counts of every
component built on the meta device (no memory), the real processor on several photo sizes and the real
scheduler's pipeline schedules."""
# fixture-depends: configs/glm_image/vision_language_encoder/config.json configs/glm_image/transformer/config.json configs/glm_image/vae/config.RECONSTRUCTED.json configs/glm_image/text_encoder/config.RECONSTRUCTED.json configs/glm_image/processor/preprocessor_config.json configs/glm_image/scheduler/scheduler_config.json tests/reference/scheduler.py
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from common import out_dir, save_arrays, seed_all
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, GlmImageTransformer2DModel
from PIL import Image
from scheduler import pipeline_schedule
from transformers import GlmImageConfig, GlmImageForConditionalGeneration, GlmImageImageProcessorPil, T5Config, \
    T5EncoderModel

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "glm_image"
PHOTO_SIZES = [(3000, 4000), (1024, 1024), (200, 300), (2048, 512), (1536, 2048)]  # (height, width)
SCHEDULES = [(1024, 1024, 50), (2048, 2048, 30), (512, 768, 10)]


def _json(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_comment")}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    out = out_dir()
    seed_all(0)
    with torch.device("meta"):
        counts = {
            "vision_language_encoder": _count(GlmImageForConditionalGeneration(
                GlmImageConfig(**_json(CONFIGS / "vision_language_encoder" / "config.json")))),
            "transformer": _count(GlmImageTransformer2DModel.from_config(_json(CONFIGS / "transformer" / "config.json"))),
            "vae": _count(AutoencoderKL.from_config(_json(CONFIGS / "vae" / "config.RECONSTRUCTED.json"))),
            "text_encoder": _count(T5EncoderModel(T5Config(**_json(CONFIGS / "text_encoder" / "config.RECONSTRUCTED.json")))),
        }
    (out / "param_counts.json").write_text(json.dumps(counts, indent=1))

    arrays = {}
    processor = GlmImageImageProcessorPil(**_json(CONFIGS / "processor" / "preprocessor_config.json"))
    rng = np.random.default_rng(0)
    for h, w in PHOTO_SIZES:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image.save(out / f"photo_{h}x{w}.png")
        batch = processor(images=image, return_tensors="np")
        arrays[f"photo_{h}x{w}_grid"] = batch["image_grid_thw"]
        if h * w <= 1024 * 1024:  # pixel values of the smaller photos (the large ones only by grid)
            arrays[f"photo_{h}x{w}_pixels"] = batch["pixel_values"]

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(_json(CONFIGS / "scheduler" / "scheduler_config.json"))
    for h, w, steps in SCHEDULES:
        timesteps, sigmas, mu = pipeline_schedule(scheduler, h, w, steps)
        arrays[f"schedule_{h}x{w}x{steps}_timesteps"] = timesteps
        arrays[f"schedule_{h}x{w}x{steps}_sigmas"] = sigmas
    save_arrays(out / "real_configs.npz", **arrays)
    (out / "cases.json").write_text(json.dumps({"photos": PHOTO_SIZES, "schedules": SCHEDULES}))


if __name__ == "__main__":
    main()
