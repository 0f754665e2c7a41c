"""Reference fixture for DiT training: the flow-matching loss and every parameter gradient by torch autograd.

The tiny random GlmImageTransformer2DModel of ``dit.py``; loss = mean((DiT(x_t, t - 1) - (noise - x0))^2)
with x_t = sigma * noise + (1 - sigma) * x0, for a text-to-image batch (second sample's prior dropped)
and an editing batch (one reference image per sample, written to diffusers' KV cache under autograd).
"""
# fixture-depends: tests/reference/dit.py
import torch
from common import out_dir, save_arrays, seed_all
from diffusers.models.transformers.transformer_glm_image import GlmImageKVCache, GlmImageTransformer2DModel
from dit import CONFIG, prior_ids, randomise


def loss_of(model, batch, cache=None):
    s = batch["sigma"].reshape(-1, 1, 1, 1)
    noisy = s * batch["noise"] + (1 - s) * batch["latents"]
    pred = model(hidden_states=noisy, encoder_hidden_states=batch["glyph"], prior_token_id=batch["prior_ids"],
                 prior_token_drop=batch["prior_drop"], timestep=batch["timestep"] - 1, target_size=batch["size"],
                 crop_coords=torch.zeros_like(batch["size"]), return_dict=False, kv_caches=cache)[0]
    return ((pred.float() - (batch["noise"] - batch["latents"])) ** 2).mean()


def make_batch(batch, c=CONFIG["in_channels"]):
    ids = prior_ids(2, 3, batch)
    drop = torch.zeros_like(ids, dtype=torch.bool)
    drop[1] = True
    return dict(latents=torch.randn(batch, c, 8, 12), noise=torch.randn(batch, c, 8, 12), sigma=torch.tensor([0.83, 0.31]),
                timestep=torch.tensor([900.0, 250.0]), glyph=torch.randn(batch, 5, CONFIG["text_embed_dim"]),
                prior_ids=ids, prior_drop=drop, size=torch.tensor([[64.0, 96.0]] * batch))


def main() -> None:
    out = out_dir()
    seed_all(0)
    model = GlmImageTransformer2DModel(**CONFIG)
    randomise(model)
    model.save_pretrained(out / "transformer", max_shard_size="20KB")
    arrays = {}
    for case in ("t2i", "edit"):
        batch = make_batch(2)
        arrays.update({f"{case}_{k}": v for k, v in batch.items()})
        model.zero_grad()
        cache = None
        if case == "edit":  # one 8x8-latent reference image per sample, written exactly as the pipeline writes
            cache = GlmImageKVCache(CONFIG["num_layers"])
            cache.set_mode("write")
            ref_lat, ref_ids = torch.randn(2, CONFIG["in_channels"], 8, 8), prior_ids(2, 2, 2)
            arrays.update(edit_ref_latents=ref_lat, edit_ref_ids=ref_ids)
            for i in range(2):
                model(hidden_states=ref_lat[i:i + 1], encoder_hidden_states=batch["glyph"][:1, :0],
                      prior_token_id=ref_ids[i], prior_token_drop=torch.zeros_like(ref_ids[i], dtype=torch.bool),
                      timestep=torch.zeros((1,)), target_size=torch.tensor([[64.0, 64.0]]),
                      crop_coords=torch.zeros((1, 2)), return_dict=False, kv_caches=cache)
                cache.next_sample()
            cache.set_mode("read")
        loss = loss_of(model, batch, cache)
        loss.backward()
        arrays[f"{case}_loss"] = loss
        arrays.update({f"{case}_grad.{name}": p.grad for name, p in model.named_parameters()})
    save_arrays(out / "dit_train.npz", **arrays)


if __name__ == "__main__":
    main()
