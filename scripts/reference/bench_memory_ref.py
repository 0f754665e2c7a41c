"""Reference half of scripts/bench_memory.py: RSS after each stage of GlmImagePipeline (torch, CPU, fp32).

argv: MODEL_DIR HEIGHT WIDTH STEPS LIMIT_GB. Prints one JSON line {stage: {VmRSS, VmHWM}} in GB.
"""
import json
import sys
from pathlib import Path

model, height, width, steps, limit = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5])
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_memory import PROMPT, record_before, stage_rss, start_watchdog  # noqa: E402

start_watchdog(limit)
stages = {"start": stage_rss()}
import torch  # noqa: E402
from diffusers import GlmImagePipeline  # noqa: E402

stages["import"] = stage_rss()
pipe = GlmImagePipeline.from_pretrained(model, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
stages["load"] = stage_rss()
with torch.no_grad():
    prior, _, _ = pipe.generate_prior_tokens(prompt=PROMPT, height=height, width=width, image=None,
                                             device=torch.device("cpu"))
    stages["ar"] = stage_rss()
    record_before(pipe.vae, "decode", stages, "denoise")
    pipe(prompt=PROMPT, height=height, width=width, num_inference_steps=steps, prior_token_ids=prior)
stages["decode"] = stage_rss()
print(json.dumps(stages))
