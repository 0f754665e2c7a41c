"""Open a ``mindglm-image make-tiny`` folder with the unmodified reference ``GlmImagePipeline.from_pretrained``.

Usage: ``tiny_model_load.py OUT MODEL_DIR``. Fails (non-zero exit, message on stderr) unless every part
loads as the expected class and every model's state_dict holds exactly the folder's tensors; then runs
the processor, the AR model, the T5 encoder, the DiT, the VAE and the whole pipeline for a 64x64 image,
and writes what it saw to ``OUT/results.json`` (T5 inputs/outputs to ``OUT/t5.npz``, the test image
to ``OUT/image.png``) for the test to check.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, GlmImagePipeline, GlmImageTransformer2DModel
from PIL import Image
from safetensors.torch import load_file
from transformers import ByT5Tokenizer, GlmImageForConditionalGeneration, GlmImageProcessor, T5EncoderModel

EXPECTED = {"tokenizer": ByT5Tokenizer, "processor": GlmImageProcessor, "text_encoder": T5EncoderModel,
            "vision_language_encoder": GlmImageForConditionalGeneration, "vae": AutoencoderKL,
            "transformer": GlmImageTransformer2DModel, "scheduler": FlowMatchEulerDiscreteScheduler}


def folder_tensors(part: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(part.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def check_state_dict(name: str, model: torch.nn.Module, part: Path) -> int:
    """Every folder tensor is in the state_dict with the same values; every other state_dict entry is a
    tied alias of one of them (e.g. T5's encoder.embed_tokens = shared)."""
    ours = folder_tensors(part)
    state = model.state_dict()
    missing = sorted(set(ours) - set(state))
    assert not missing, f"{name}: folder tensors the model does not have: {missing[:10]}"
    for key, value in ours.items():
        assert state[key].shape == value.shape, f"{name}.{key}: {tuple(state[key].shape)} vs {tuple(value.shape)}"
        assert torch.equal(state[key].float(), value.float()), f"{name}.{key}: values differ from the folder"
    ptrs = {state[k].data_ptr() for k in ours}
    extra = sorted(k for k in set(state) - set(ours) if state[k].data_ptr() not in ptrs)
    assert not extra, f"{name}: model tensors not filled from the folder: {extra[:10]}"
    return len(ours)


def stats(x: torch.Tensor) -> dict:
    x = x.detach().float()
    return {"finite": bool(torch.isfinite(x).all()), "std": float(x.std()), "shape": list(x.shape)}


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} OUT_DIR MODEL_DIR")
    out, folder = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    pipe = GlmImagePipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    results: dict = {"classes": {}, "tensors": {}}
    for name, cls in EXPECTED.items():
        component = getattr(pipe, name)
        assert isinstance(component, cls), f"{name}: {type(component).__name__}, expected {cls.__name__}"
        results["classes"][name] = type(component).__name__
        if isinstance(component, torch.nn.Module):
            results["tensors"][name] = check_state_dict(name, component, folder / name)

    with torch.no_grad():
        # processor: the chat template with the target / preview grids (text-to-image, 256x256 -> 8x8 grid)
        messages = [[{"role": "user", "content": [{"type": "text", "text": "a red cat holds a sign"}]}]]
        enc = pipe.processor.apply_chat_template(messages, tokenize=True, target_h=256, target_w=256,
                                                 return_dict=True, return_tensors="pt")
        results["processor"] = {"input_ids": enc["input_ids"].tolist(), "image_grid_thw": enc["image_grid_thw"].tolist()}

        # AR model: full forward; the next-token distribution stays on the VQ codes
        ar = pipe.vision_language_encoder
        logits = ar(**enc).logits[0, -1]
        codes = ar.config.vq_config.num_embeddings
        results["ar_logits"] = stats(logits)
        results["ar_code_mass"] = float(torch.softmax(logits, -1)[:codes].sum())

        # reference image -> 16-px patches -> vision encoder -> VQ ids
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
        image.save(out / "image.png")
        pix = pipe.processor.image_processor(images=[image], return_tensors="pt")
        feats = ar.get_image_features(pix["pixel_values"], pix["image_grid_thw"]).pooler_output
        ids = ar.get_image_tokens(feats, pix["image_grid_thw"])
        results["vision"] = {"pixel_values": list(pix["pixel_values"].shape), "grid": pix["image_grid_thw"].tolist(),
                             "ids": ids.tolist()}

        # T5 (Glyph-byT5) encoder
        tok = pipe.tokenizer(["GLM", "hello world"], padding="longest", return_tensors="pt")
        t5 = pipe.text_encoder(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
        results["t5"] = stats(t5)
        np.savez(out / "t5.npz", input_ids=tok.input_ids.numpy(), attention_mask=tok.attention_mask.numpy(),
                 last_hidden_state=t5.numpy())

        # DiT: one conditional pass on a 64x64 image (latent 8x8, AR grid 2x2)
        dit = pipe.transformer
        prior = GlmImagePipeline._upsample_token_ids(torch.randint(0, codes, (4,)), 2, 2)
        noise = dit(hidden_states=torch.randn(1, 16, 8, 8), encoder_hidden_states=t5[:1], prior_token_id=prior,
                    prior_token_drop=torch.zeros_like(prior, dtype=torch.bool), timestep=torch.tensor([499.0]),
                    target_size=torch.tensor([[64.0, 64.0]]), crop_coords=torch.zeros(1, 2), return_dict=False)[0]
        results["dit"] = stats(noise)

        # VAE decode
        results["vae"] = stats(pipe.vae.decode(torch.randn(1, 16, 8, 8)).sample)

    # the whole pipeline, sampling and all
    image = pipe(prompt="a sign that says 'hi'", height=64, width=64, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    results["pipeline"] = {"shape": list(image.shape), "std": float(image.std()),
                           "finite": bool(np.isfinite(image).all())}
    (out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
