"""Reference fixture: ONE text-decoder layer at the real size (shipped config, 1 layer), random weights.

Weights are rounded to bf16 (the checkpoint's dtype) and saved as bf16, so the fp32 reference run and
our fp32 run see identical values. Inputs: 6 tokens with 3-D positions (text, then a 1x2x2 grid).
"""
from __future__ import annotations

from pathlib import Path

import torch
from common import out_dir, save_arrays, seed_all
from safetensors.torch import save_file
from transformers import GlmImageConfig
from transformers.models.glm_image.modeling_glm_image import GlmImageTextDecoderLayer, GlmImageTextRotaryEmbedding

REAL_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "glm_image" / "vision_language_encoder"


def main() -> None:
    out = out_dir()
    seed_all(0)
    config = GlmImageConfig.from_pretrained(REAL_CONFIG).text_config
    config.num_hidden_layers = 1
    layer = GlmImageTextDecoderLayer(config, 0).eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            value = 1.0 + 0.2 * torch.randn_like(p) if name.endswith("norm.weight") else 0.02 * torch.randn_like(p)
            p.copy_(value.bfloat16().float())
    save_file({f"layers.0.{k}": v.bfloat16().contiguous() for k, v in layer.state_dict().items()},
              str(out / "model.safetensors"))

    hidden = torch.randn(1, 6, config.hidden_size)
    positions = torch.tensor([[0, 1, 2, 2, 2, 2], [0, 1, 2, 2, 3, 3], [0, 1, 2, 3, 2, 3]])[:, None, :]
    causal = torch.full((6, 6), torch.finfo(torch.float32).min).triu(1)[None, None]
    with torch.no_grad():
        cos, sin = GlmImageTextRotaryEmbedding(config)(hidden, positions)
        output = layer(hidden, position_embeddings=(cos, sin), attention_mask=causal)
    save_arrays(out / "layer.npz", hidden=hidden, positions=positions, output=output)


if __name__ == "__main__":
    main()
