"""Reference fixture for the DiT decoder: a tiny random GlmImageTransformer2DModel, its inputs and outputs.

Covers the pipeline's call patterns: text-to-image conditional and unconditional (prior dropped) passes,
and image-to-image with the KV cache (write / read / skip) for one reference image, two reference images
of different sizes, and one reference image per batch sample. Also records the pipeline's own prior-token
upsampling on a random grid.
"""
import math

import torch
from common import out_dir, save_arrays, seed_all
from diffusers.models.transformers.transformer_glm_image import GlmImageKVCache, GlmImageTransformer2DModel
from diffusers.pipelines.glm_image.pipeline_glm_image import GlmImagePipeline

CONFIG = dict(patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
              text_embed_dim=24, time_embed_dim=32, condition_dim=8, prior_vq_quantizer_codebook_size=64)
VOCAB = CONFIG["prior_vq_quantizer_codebook_size"]


def randomise(model: torch.nn.Module) -> None:
    """Every parameter random (diffusers zero-initialises some), scaled to keep activations O(1)."""
    with torch.no_grad():
        for p in model.parameters():
            std = 1.0 / math.sqrt(p.shape[1]) if p.ndim == 2 else 0.2
            p.copy_(torch.randn_like(p) * std)


def prior_ids(grid_h: int, grid_w: int, batch: int) -> torch.Tensor:
    """AR-grid ids upsampled to the latent patch grid exactly as the pipeline does, (batch, 4*h*w)."""
    rows = [GlmImagePipeline._upsample_token_ids(torch.randint(0, VOCAB, (grid_h * grid_w,)), grid_h, grid_w)
            for _ in range(batch)]
    return torch.cat(rows, 0)


def main() -> None:
    out = out_dir()
    seed_all(0)
    model = GlmImageTransformer2DModel(**CONFIG).eval()
    randomise(model)
    model.save_pretrained(out / "transformer", max_shard_size="20KB")

    c, arrays = CONFIG["in_channels"], {}
    # target: batch 2, latent 8x12 (patch grid 4x6, AR grid 2x3), pixel size 64x96
    latents = torch.randn(2, c, 8, 12)
    ids = prior_ids(2, 3, batch=2)
    glyph = torch.randn(2, 5, CONFIG["text_embed_dim"])
    negative = torch.randn(2, 1, CONFIG["text_embed_dim"])
    timestep = torch.tensor([936.0, 412.0])
    target = torch.tensor([[64.0, 96.0]] * 2)
    crop = torch.tensor([[0.0, 0.0], [8.0, 16.0]])
    keep, drop = torch.zeros_like(ids, dtype=torch.bool), torch.ones_like(ids, dtype=torch.bool)
    arrays.update(latents=latents, prior_ids=ids, glyph=glyph, negative=negative, timestep=timestep,
                  target_size=target, crop_coords=crop)

    # reference images: latents 8x8 (patch grid 4x4) and 4x4 (2x2), and a second 8x8 one for per-sample caches
    refs = {"ref_a": (torch.randn(1, c, 8, 8), prior_ids(2, 2, 1)[0]),
            "ref_b": (torch.randn(1, c, 4, 4), prior_ids(1, 1, 1)[0]),
            "ref_c": (torch.randn(1, c, 8, 8), prior_ids(2, 2, 1)[0])}
    for name, (lat, rid) in refs.items():
        arrays[f"{name}_latents"], arrays[f"{name}_ids"] = lat, rid

    def run(hidden, text, drop_mask, cache=None):
        return model(hidden_states=hidden, encoder_hidden_states=text, prior_token_id=ids, prior_token_drop=drop_mask,
                     timestep=timestep, target_size=target, crop_coords=crop, return_dict=False, kv_caches=cache)[0]

    def write(cache, name):
        lat, rid = refs[name]
        # exactly the pipeline's write call: no text, 1-D ids, timestep 0, pixel size of the reference image
        return model(hidden_states=lat, encoder_hidden_states=torch.zeros_like(glyph)[:1, :0, ...],
                     prior_token_id=rid, prior_token_drop=torch.full_like(rid, False, dtype=torch.bool),
                     timestep=torch.zeros((1,)), target_size=torch.tensor([[lat.shape[-2] * 8, lat.shape[-1] * 8]]),
                     crop_coords=torch.zeros((1, 2)), return_dict=False, kv_caches=cache)[0]

    with torch.no_grad():
        arrays["t2i_cond"] = run(latents, glyph, keep)
        arrays["t2i_uncond"] = run(latents, negative, drop)

        for case, samples in (("one_ref", [["ref_a"]]), ("two_refs", [["ref_a", "ref_b"]]),
                              ("per_sample", [["ref_a"], ["ref_c"]])):
            cache = GlmImageKVCache(CONFIG["num_layers"])
            cache.set_mode("write")
            for s, names in enumerate(samples):
                for name in names:
                    arrays[f"{case}_write_{s}_{name}"] = write(cache, name)
                cache.next_sample()
            arrays[f"{case}_cached_keys_layer0"] = torch.cat(cache[0].k_caches, 0)
            cache.set_mode("read")
            arrays[f"{case}_read"] = run(latents, glyph, keep, cache)
            cache.set_mode("skip")
            arrays[f"{case}_skip"] = run(latents, negative, drop, cache)

    # prior-token upsampling: a 3x5 AR grid (odd sizes) through the pipeline's helper
    grid = torch.randint(0, 16384, (3 * 5,))
    arrays.update(upsample_grid=grid, upsample_out=GlmImagePipeline._upsample_token_ids(grid, 3, 5))
    save_arrays(out / "dit.npz", **arrays)


if __name__ == "__main__":
    main()
