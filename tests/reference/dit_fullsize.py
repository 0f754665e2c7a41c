"""Reference fixture: the DiT at the real checkpoint's width (configs/glm_image/transformer/config.json:
32 heads x 128 = 4096, glyph dim 1472, prior codebook 16384) with ONE block (memory: ~0.35 B parameters),
bf16-rounded random weights (the checkpoint's dtype), one T2I forward."""
# fixture-depends: configs/glm_image/transformer/config.json
import json
from pathlib import Path

import torch
from diffusers.models.transformers.transformer_glm_image import GlmImageTransformer2DModel

from common import out_dir, save_arrays, seed_all

out = out_dir()
seed_all(0)
config = json.loads((Path(__file__).resolve().parents[2] / "configs/glm_image/transformer/config.json").read_text())
model = GlmImageTransformer2DModel.from_config({**config, "num_layers": 1}).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        std = 0.02 if p.ndim > 1 else 0.05
        p.copy_((std * torch.randn_like(p)).bfloat16().float())
model.to(torch.bfloat16).save_pretrained(out / "transformer", max_shard_size="200MB")
model.float()
c = model.config
latents = torch.randn(1, c.in_channels, 24, 32)          # 12 x 16 patches
ids = torch.randint(0, c.prior_vq_quantizer_codebook_size, (1, 12 * 16))
glyph = torch.randn(1, 7, c.text_embed_dim)
with torch.no_grad():
    output = model(hidden_states=latents, encoder_hidden_states=glyph, prior_token_id=ids,
                   prior_token_drop=torch.zeros_like(ids, dtype=torch.bool), timestep=torch.tensor([730.0]),
                   target_size=torch.tensor([[192.0, 256.0]]), crop_coords=torch.zeros(1, 2), return_dict=False)[0]
save_arrays(out / "dit_fullsize.npz", latents=latents, ids=ids, glyph=glyph, output=output)
