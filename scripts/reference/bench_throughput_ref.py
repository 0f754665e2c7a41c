"""Reference half of scripts/bench_throughput.py: the reference GlmImagePipeline (torch, CPU) generating the
same prompts one call each, each with its own seeded generator, after a warm-up round (seeds + WARM_SEED).

argv: MODEL_DIR HEIGHT WIDTH STEPS PROMPTS_JSON SEEDS_JSON WARM_SEED. Prints one JSON line: seconds for the prompts.
"""
import json
import sys
import time

import torch
from diffusers import GlmImagePipeline

model, height, width, steps = sys.argv[1], *map(int, sys.argv[2:5])
prompts, seeds, warm = json.loads(sys.argv[5]), json.loads(sys.argv[6]), int(sys.argv[7])
pipe = GlmImagePipeline.from_pretrained(model, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)


def generate(prompt, seed):
    return pipe(prompt=prompt, height=height, width=width, num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed)).images[0]


for prompt, seed in zip(prompts, seeds):  # warm-up round, as ours
    generate(prompt, seed + warm)
start = time.perf_counter()
for prompt, seed in zip(prompts, seeds):
    generate(prompt, seed)
print(json.dumps({"seconds": time.perf_counter() - start, "images": len(prompts), "threads": torch.get_num_threads()}))
