"""Reference half of ``scripts/bench_train.py`` (runs in .venv-ref): the same DiT train step in torch.

Writes a random GlmImageTransformer2DModel of the given config to OUT/transformer (our side loads that
folder), then times forward + backward + clip + AdamW + EMA on the given batch; prints one JSON line.
"""
import json
import resource
import sys
import time
from pathlib import Path

import torch
from diffusers.models.transformers.transformer_glm_image import GlmImageTransformer2DModel


def main() -> None:
    out, config, batch, height, width, text, steps = Path(sys.argv[1]), json.loads(sys.argv[2]), *map(int, sys.argv[3:8])
    torch.manual_seed(0)
    model = GlmImageTransformer2DModel(**config)
    model.save_pretrained(out / "transformer")
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    c, p = config["in_channels"], config["patch_size"]
    latents, noise = torch.randn(batch, c, height, width), torch.randn(batch, c, height, width)
    ids = torch.randint(0, config["prior_vq_quantizer_codebook_size"], (batch, (height // p) * (width // p)))
    glyph = torch.randn(batch, text, config["text_embed_dim"])
    sigma, timestep = torch.rand(batch), torch.randint(1, 1001, (batch,)).float()
    size = torch.tensor([[height * 8.0, width * 8.0]] * batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        s = sigma.reshape(-1, 1, 1, 1)
        pred = model(hidden_states=s * noise + (1 - s) * latents, encoder_hidden_states=glyph, prior_token_id=ids,
                     prior_token_drop=torch.zeros_like(ids, dtype=torch.bool), timestep=timestep - 1, target_size=size,
                     crop_coords=torch.zeros_like(size), return_dict=False)[0]
        loss = ((pred - (noise - latents)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for e, w in zip(ema, params):
                e.mul_(0.999).add_(w, alpha=0.001)
        times.append(time.perf_counter() - start)
    warm = sorted(times[1:])
    print(json.dumps({"first_s": times[0], "median_s": warm[len(warm) // 2],
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))


if __name__ == "__main__":
    main()
