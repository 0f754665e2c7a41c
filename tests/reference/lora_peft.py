"""Reference fixture for LoRA adapters: PEFT adapters on the tiny reference DiT and AR model, and outputs.

Saves the tiny DiT (as tests/reference/dit.py) and AR model (as tests/reference/ar_text.py) in the HF
layout, three PEFT adapters with random non-zero A and B (``dit_a``: default DiT targets; ``dit_b``:
rsLoRA with an alpha pattern; ``ar_a``: the AR attention projections), and the reference outputs with
them: DiT with ``dit_a`` alone and with ``dit_a`` x0.7 + ``dit_b`` x1.5 active together (PEFT's
per-adapter scales), AR logits with ``ar_a``.
"""
# fixture-depends: tests/reference/dit.py tests/reference/ar_text.py
from __future__ import annotations

import numpy as np
import torch
from ar_text import CONFIG as AR_CONFIG, prompts, randomize
from common import out_dir, save_arrays, seed_all
from diffusers.models.transformers.transformer_glm_image import GlmImageTransformer2DModel
from dit import CONFIG as DIT_CONFIG, prior_ids, randomise
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import GlmImageConfig, GlmImageForConditionalGeneration

ADAPTERS = {
    "dit_a": LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]),
    "dit_b": LoraConfig(r=2, lora_alpha=3, use_rslora=True, alpha_pattern={"ff.net.2": 5}, init_lora_weights=False,
                        target_modules=["to_v", "ff.net.2"]),
    "ar_a": LoraConfig(r=4, lora_alpha=16, init_lora_weights=False, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
}


def dit_inputs() -> dict[str, torch.Tensor]:
    """Batch 1, latent 8x12 (AR grid 2x3), conditional pass."""
    ids = prior_ids(2, 3, batch=1)
    return dict(hidden_states=torch.randn(1, DIT_CONFIG["in_channels"], 8, 12),
                encoder_hidden_states=torch.randn(1, 5, DIT_CONFIG["text_embed_dim"]), prior_token_id=ids,
                prior_token_drop=torch.zeros_like(ids, dtype=torch.bool), timestep=torch.tensor([640.0]),
                target_size=torch.tensor([[64.0, 96.0]]), crop_coords=torch.zeros(1, 2))


def run_dit(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def make_adapter(base, name, out) -> None:
    """A PEFT adapter on ``base`` with random A and B (B non-zero), saved with save_pretrained."""
    peft_model = get_peft_model(base, ADAPTERS[name])
    with torch.no_grad():
        for pname, p in peft_model.named_parameters():
            if "lora_" in pname:
                p.copy_(0.2 * torch.randn_like(p))
    peft_model.save_pretrained(out / name)
    peft_model.unload()  # back to the plain base model


def main() -> None:
    out = out_dir()
    seed_all(0)
    dit = GlmImageTransformer2DModel(**DIT_CONFIG).eval()
    randomise(dit)
    dit.save_pretrained(out / "transformer", max_shard_size="20KB")
    ar = GlmImageForConditionalGeneration(GlmImageConfig(**AR_CONFIG)).eval()
    randomize(ar)
    ar.save_pretrained(out / "vision_language_encoder", max_shard_size="50KB")
    inputs = dit_inputs()
    ids, grids = prompts(np.random.default_rng(0))["t2i"]
    ids = torch.tensor([ids])
    pos, _ = ar.model.get_rope_index(ids, image_grid_thw=torch.tensor(grids))
    arrays = {**inputs, "dit_base": run_dit(dit, inputs), "ar_ids": ids, "ar_positions": pos}

    for name in ADAPTERS:
        make_adapter(dit if name.startswith("dit") else ar, name, out)

    model = PeftModel.from_pretrained(dit, out / "dit_a", adapter_name="a")
    arrays["dit_a"] = run_dit(model, inputs)
    model.load_adapter(out / "dit_b", adapter_name="b")
    model.base_model.set_adapter(["a", "b"])
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("a", 0.7)
            module.set_scale("b", 1.5)
    arrays["dit_a07_b15"] = run_dit(model, inputs)

    model = PeftModel.from_pretrained(ar, out / "ar_a")
    with torch.no_grad():
        arrays["ar_a_logits"] = model(input_ids=ids, position_ids=pos).logits
    save_arrays(out / "lora_peft.npz", **arrays)


if __name__ == "__main__":
    main()
