"""Reference GlmImagePipeline denoising loop (its own __call__, AR and glyph inputs given, latent output)."""
# fixture-depends: tests/reference/dit.py
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, GlmImagePipeline
from diffusers.models.transformers.transformer_glm_image import GlmImageTransformer2DModel

from common import out_dir, save_arrays, seed_all
from dit import CONFIG, prior_ids, randomise

out = out_dir()
seed_all(0)
model = GlmImageTransformer2DModel(**CONFIG).eval()
randomise(model)
model.save_pretrained(out / "transformer", max_shard_size="20KB")
scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.25, max_shift=0.75,
                                            base_image_seq_len=256, time_shift_type="linear")
scheduler.save_pretrained(out / "scheduler")
pipe = GlmImagePipeline(tokenizer=None, processor=None, text_encoder=None, vision_language_encoder=None, vae=None,
                        transformer=model, scheduler=scheduler)
pipe.set_progress_bar_config(disable=True)
height, width, steps, guidance = 64, 96, 4, 1.5
latents = torch.randn(2, CONFIG["in_channels"], height // 8, width // 8)
ids = prior_ids(height // 32, width // 32, batch=2)
glyph = torch.randn(2, 5, CONFIG["text_embed_dim"])
negative = torch.randn(2, 5, CONFIG["text_embed_dim"])
with torch.no_grad():
    final = pipe(prompt=None, prompt_embeds=glyph, negative_prompt_embeds=negative, prior_token_ids=ids,
                 latents=latents.clone(), height=height, width=width, num_inference_steps=steps,
                 guidance_scale=guidance, output_type="latent").images
save_arrays(out / "loop.npz", latents=latents, prior_ids=ids, glyph=glyph, negative=negative, final=final,
            timesteps=pipe.scheduler.timesteps, sigmas=pipe.scheduler.sigmas)
