"""End-to-end reference: GlmImagePipeline (unmodified) on the tiny model folder written by our make-tiny.

argv: OUT TINY_DIR. Greedy AR (top_k=1) prior tokens for T2I and for I2I with one and two reference
images, then the pipeline's own __call__ from fixed noise with those prior tokens (float pixels).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import GlmImagePipeline
from PIL import Image

from common import save_arrays, seed_all

out, tiny = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
seed_all(0)
pipe = GlmImagePipeline.from_pretrained(tiny, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
ar = pipe.vision_language_encoder
ar.generation_config.top_k = 1  # the pipeline always samples: top-1 sampling is greedy decoding
HEIGHT, WIDTH, STEPS, GUIDANCE = 64, 96, 3, 1.5
PROMPT = "a red cat holds a sign that says 'hello world'"


def photo(w: int, h: int, seed: int) -> Image.Image:
    """A deterministic photo-like test image: gradients, a disc and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([x, y, 1 - x * y], -1) * 200 + rng.normal(0, 12, (h, w, 3))
    img[((x - 0.5) ** 2 + (y - 0.4) ** 2) < 0.05] = [230, 40, 40]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def upsample(ids, h, w):
    return GlmImagePipeline._upsample_token_ids(ids, h, w)[0]


results, arrays = {}, {}
latents = torch.randn(1, pipe.transformer.config.in_channels, HEIGHT // 8, WIDTH // 8)
arrays["latents"] = latents

# text-to-image: the pipeline's own AR path
prior, _, _ = pipe.generate_prior_tokens(prompt=PROMPT, height=HEIGHT, width=WIDTH, image=None, device=torch.device("cpu"))
arrays["t2i_prior"] = prior
image = pipe(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
             latents=latents.clone(), prior_token_ids=prior, output_type="np").images
arrays["t2i_pixels"] = torch.from_numpy(np.asarray(image))

# two images of one prompt: one prior, two noises
latents2 = torch.randn(2, pipe.transformer.config.in_channels, HEIGHT // 8, WIDTH // 8)
arrays["latents2"] = latents2
image = pipe(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
             latents=latents2.clone(), prior_token_ids=prior, num_images_per_prompt=2, output_type="np").images
arrays["t2i_two_pixels"] = torch.from_numpy(np.asarray(image))

# a batch of two prompts of different lengths (left padding)
batch_prior, _, _ = pipe.generate_prior_tokens(prompt=[PROMPT, "a blue bird"], height=HEIGHT, width=WIDTH, image=None,
                                               device=torch.device("cpu"))
arrays["batch_prior"] = batch_prior

# image-to-image: transformers' generate on the processor's inputs (diffusers' own I2I AR helper
# concatenates per-image features before quantising, which fails), ids per reference image as the model does
for name, sizes in (("i2i1", [(96, 64)]), ("i2i2", [(96, 64), (64, 64)])):
    refs = [photo(w, h, i) for i, (w, h) in enumerate(sizes)]
    for i, img in enumerate(refs):
        img.save(out / f"{name}_ref{i}.png")
    messages = [[{"role": "user", "content": [{"type": "image", "image": r} for r in refs] + [{"type": "text", "text": PROMPT}]}]]
    inputs = pipe.processor.apply_chat_template(messages, tokenize=True, target_h=HEIGHT, target_w=WIDTH,
                                                return_dict=True, return_tensors="pt")
    grid = inputs["image_grid_thw"]
    th, tw = int(grid[-1, 1]), int(grid[-1, 2])
    with torch.no_grad():
        generated = ar.generate(**inputs, max_new_tokens=th * tw + 1, do_sample=True)
        features = ar.get_image_features(inputs["pixel_values"], grid[:-1]).pooler_output
        ref_ids = [ar.get_image_tokens([f]) for f in features]  # one image at a time, as GlmImageModel does
    new = generated[0, inputs["input_ids"].shape[1]:]
    prior = upsample(new[:th * tw], th, tw)[None]
    ups = [upsample(ids, int(g[1]), int(g[2])) for ids, g in zip(ref_ids, grid[:-1])]
    src_grids = grid[:-1].clone()
    src_grids[:, 1:] *= 2
    arrays[f"{name}_generated"] = new
    arrays[f"{name}_prior"] = prior
    arrays[f"{name}_ref_ids"] = torch.cat(ups)
    image = pipe(prompt=PROMPT, image=refs, height=HEIGHT, width=WIDTH, num_inference_steps=STEPS,
                 guidance_scale=GUIDANCE, latents=latents.clone(), prior_token_ids=prior,
                 prior_token_image_ids=[torch.cat(ups)], source_image_grid_thw=[src_grids], output_type="np").images
    arrays[f"{name}_pixels"] = torch.from_numpy(np.asarray(image))
    results[name] = {"sizes": sizes, "grid": grid.tolist()}
save_arrays(out / "e2e.npz", **arrays)
(out / "e2e.json").write_text(json.dumps({"height": HEIGHT, "width": WIDTH, "steps": STEPS, "guidance": GUIDANCE,
                                          "prompt": PROMPT, **results}))
