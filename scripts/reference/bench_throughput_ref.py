"""Reference half of scripts/bench_throughput.py: the reference GlmImagePipeline (torch, CPU) generating the
same prompts one call each, each with its own seeded generator, after one warm-up call.

argv: MODEL_DIR HEIGHT WIDTH STEPS PROMPTS_JSON SEEDS_JSON. Prints one JSON line: seconds for the prompts.
"""
import json
import sys
import time

import torch
from diffusers import GlmImagePipeline

model, height, width, steps = sys.argv[1], *map(int, sys.argv[2:5])
prompts, seeds = json.loads(sys.argv[5]), json.loads(sys.argv[6])
pipe = GlmImagePipeline.from_pretrained(model, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)


def generate(prompt, seed):
    return pipe(prompt=prompt, height=height, width=width, num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed)).images[0]


generate(prompts[0], seeds[0] + 1)  # warm-up
start = time.perf_counter()
for prompt, seed in zip(prompts, seeds):
    generate(prompt, seed)
print(json.dumps({"seconds": time.perf_counter() - start, "images": len(prompts), "threads": torch.get_num_threads()}))
