"""Reference for the AR model's vision encoder, VQ quantizer and reference-image preprocessing.

Writes a tiny random ``GlmImageForConditionalGeneration`` (sharded, HF layout), a synthetic photo-like
PNG, and to ``ar_vision.npz``: vision features of two packed random images, the processed pixels and
VQ ids of the PNG, and the image processor's outputs for several image sizes and two processor configs.
"""
import json

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import GlmImageConfig, GlmImageForConditionalGeneration, GlmImageImageProcessorPil

from common import out_dir, save_arrays, seed_all

PATCH = 16
# processor settings that match the vision encoder (one patch per token, no temporal / spatial merge)
MODEL_PROCESSOR = {"patch_size": PATCH, "temporal_patch_size": 1, "merge_size": 1,
                   "min_pixels": 64 * 64, "max_pixels": 256 * 256}
PROCESSOR_SIZES = [(300, 200), (64, 64), (517, 389), (90, 360), (1800, 1100)]


def tiny_config() -> GlmImageConfig:
    return GlmImageConfig(
        text_config={"vocab_size": 300, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 299,
                     "vision_vocab_size": 200, "eos_token_id": 161, "max_position_embeddings": 512,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                         "partial_rotary_factor": 0.5}},
        vision_config={"depth": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
                       "image_size": 128, "patch_size": PATCH},
        vq_config={"embed_dim": 16, "num_embeddings": 64, "latent_channels": 32},
        image_token_id=298, image_start_token_id=160, image_end_token_id=161,
    )


def photo_like(height: int, width: int, seed: int) -> Image.Image:
    """Deterministic 'photo': smooth colour gradients, a few filled shapes, mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([120 + 100 * np.sin(xx / width * 3.1 + 0.3),
                     90 + 80 * (yy / height),
                     150 + 60 * np.cos((xx + yy) / (width + height) * 6.0)], axis=-1)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        x1, y1 = x0 + int(rng.integers(15, width // 2)), y0 + int(rng.integers(15, height // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    arr = np.asarray(img).astype(np.float64) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def main() -> None:
    out = out_dir()
    seed_all(0)
    model = GlmImageForConditionalGeneration(tiny_config()).eval()
    model.save_pretrained(out / "vision_language_encoder", max_shard_size="50KB")
    arrays = {}

    with torch.no_grad():
        # two packed images with different grids: one smaller and one larger than the 8x8 position table
        grid = torch.tensor([[1, 5, 3], [1, 10, 12]])
        pixels = torch.randn(int(grid.prod(-1).sum()), 3 * PATCH * PATCH)
        arrays.update(features_grid=grid, features_pixels=pixels,
                      features=model.model.visual(pixels, grid_thw=grid).last_hidden_state)

        # VQ ids of a photo-like image (resized by the processor) and of a second, non-square one
        processor = GlmImageImageProcessorPil(**MODEL_PROCESSOR)
        processor.save_pretrained(out / "processor")
        images = [photo_like(360, 300, seed=1), photo_like(200, 330, seed=2)]
        for i, img in enumerate(images):
            img.save(out / f"photo{i}.png")
        batch = processor(images=images, return_tensors="pt")
        feats = model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
        ids = model.get_image_tokens(feats, batch["image_grid_thw"])
        arrays.update(photo_pixels=batch["pixel_values"], photo_grid=batch["image_grid_thw"], photo_ids=ids)

    # image processor alone: default settings and the model's settings, several sizes and aspect ratios
    cases = []
    for h, w in PROCESSOR_SIZES:
        photo_like(h, w, seed=h * 7 + w).save(out / f"image_{h}x{w}.png")
    for name, kwargs in (("default", {}), ("model", MODEL_PROCESSOR)):
        processor = GlmImageImageProcessorPil(**kwargs)
        processor.save_pretrained(out / f"processor_{name}")
        for h, w in PROCESSOR_SIZES:
            key = f"{name}_{h}x{w}"
            batch = processor(images=Image.open(out / f"image_{h}x{w}.png"), return_tensors="np")
            arrays[f"{key}_pixels"] = batch["pixel_values"]
            arrays[f"{key}_grid"] = batch["image_grid_thw"]
            cases.append({"key": key, "processor": f"processor_{name}", "image": f"image_{h}x{w}.png"})
    (out / "processor_cases.json").write_text(json.dumps(cases, indent=1))
    save_arrays(out / "ar_vision.npz", **arrays)


if __name__ == "__main__":
    main()
