"""The demo model through the unmodified GlmImagePipeline: the architecture we train is the real one.

argv: OUT MODEL_DIR. Greedy (top-1) prior tokens of one demo caption at 128 x 128, then the pipeline's own
__call__ from fixed noise with those tokens (float pixels).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import GlmImagePipeline

from common import save_arrays, seed_all

out, model = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
seed_all(0)
pipe = GlmImagePipeline.from_pretrained(model, torch_dtype=torch.float32)
pipe.set_progress_bar_config(disable=True)
pipe.vision_language_encoder.generation_config.top_k = 1  # the pipeline always samples: top-1 is greedy
SIDE, STEPS, GUIDANCE = 128, 4, 1.5
PROMPT = 'a red circle on the left and a blue square on the right, on a yellow background, with the text "HI"'
latents = torch.randn(1, pipe.transformer.config.in_channels, SIDE // 8, SIDE // 8)
prior, _, _ = pipe.generate_prior_tokens(prompt=PROMPT, height=SIDE, width=SIDE, image=None, device=torch.device("cpu"))
image = pipe(prompt=PROMPT, height=SIDE, width=SIDE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
             latents=latents.clone(), prior_token_ids=prior, output_type="np").images
save_arrays(out / "demo.npz", latents=latents, prior=prior, pixels=torch.from_numpy(np.asarray(image)))
(out / "demo.json").write_text(json.dumps({"side": SIDE, "steps": STEPS, "guidance": GUIDANCE, "prompt": PROMPT}))
