"""Reference half of scripts/bench_generate.py: time GlmImagePipeline on the same model folder (torch, CPU).

argv: MODEL_DIR HEIGHT WIDTH STEPS REPEATS. Prints one JSON line with the best-of-REPEATS timings.
"""
import json
import sys
import time

import torch
from diffusers import GlmImagePipeline

model, height, width, steps, repeats = sys.argv[1], *map(int, sys.argv[2:6])
torch.manual_seed(0)
pipe = GlmImagePipeline.from_pretrained(model, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
prompt = 'A cat holding a sign that says "hello"'
ar, denoise, tokens = [], [], 0
for _ in range(repeats):
    start = time.perf_counter()
    prior, _, _ = pipe.generate_prior_tokens(prompt=prompt, height=height, width=width, image=None, device=torch.device("cpu"))
    ar.append(time.perf_counter() - start)
    h, w = height // 32, width // 32
    ph, pw = int((h / w) ** 0.5 * 16), int((w / h) ** 0.5 * 16)
    tokens = h * w + ph * pw + 1
    start = time.perf_counter()
    pipe(prompt=prompt, height=height, width=width, num_inference_steps=steps, prior_token_ids=prior, output_type="latent")
    denoise.append(time.perf_counter() - start)
print(json.dumps({"ar_tokens": tokens, "ar_s": min(ar), "denoise_s": min(denoise), "steps": steps}))
