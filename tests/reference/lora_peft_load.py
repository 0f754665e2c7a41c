"""Load adapters written by OUR save_adapter with PEFT on the reference models and record the outputs.

Usage: lora_peft_load.py OUT FIXTURE DIT_ADAPTER AR_ADAPTER, where FIXTURE is the folder made by
lora_peft.py (reference models in the HF layout and their inputs).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from common import save_arrays, seed_all
from diffusers.models.transformers.transformer_glm_image import GlmImageTransformer2DModel
from peft import PeftModel
from transformers import GlmImageForConditionalGeneration


def main() -> None:
    out, fixture, dit_adapter, ar_adapter = map(Path, sys.argv[1:5])
    seed_all(0)
    data = np.load(fixture / "lora_peft.npz")
    inputs = {k: torch.from_numpy(data[k]) for k in ("hidden_states", "encoder_hidden_states", "prior_token_id",
                                                      "prior_token_drop", "timestep", "target_size", "crop_coords")}
    dit = PeftModel.from_pretrained(GlmImageTransformer2DModel.from_pretrained(fixture / "transformer").eval(), dit_adapter)
    ar = PeftModel.from_pretrained(GlmImageForConditionalGeneration.from_pretrained(fixture / "vision_language_encoder").eval(),
                                   ar_adapter)
    with torch.no_grad():
        dit_out = dit(**inputs, return_dict=False)[0]
        logits = ar(input_ids=torch.from_numpy(data["ar_ids"]), position_ids=torch.from_numpy(data["ar_positions"])).logits
    save_arrays(out / "outputs.npz", dit=dit_out, ar_logits=logits)


if __name__ == "__main__":
    main()
