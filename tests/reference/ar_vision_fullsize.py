"""Reference fixture: the vision encoder at its real width (hidden 1536, 16 heads, MLP 6144, 128x128
position table) with ONE block, and the real-size VQ (16384 codes x 2048), bf16-rounded random weights;
features and VQ ids of a real photograph (matplotlib's sample grace_hopper.jpg) and a photo-like image."""
# fixture-depends: tests/reference/ar_vision.py configs/glm_image/vision_language_encoder/config.json
from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import GlmImageConfig, GlmImageImageProcessorPil
from transformers.models.glm_image.modeling_glm_image import GlmImageVisionModel, GlmImageVQVAE

from ar_vision import MODEL_PROCESSOR, photo_like
from common import out_dir, save_arrays, seed_all

REAL = Path(__file__).resolve().parents[2] / "configs" / "glm_image" / "vision_language_encoder"
out = out_dir()
seed_all(0)
config = GlmImageConfig.from_pretrained(REAL)
config.vision_config.depth = 1
visual, vq = GlmImageVisionModel(config.vision_config).eval(), GlmImageVQVAE(config.vq_config).eval()
state = {}
with torch.no_grad():
    for prefix, module in (("visual.", visual), ("vqmodel.", vq)):
        for name, p in module.named_parameters():
            value = 1.0 + 0.1 * torch.randn_like(p) if name.endswith("norm1.weight") or name.endswith("norm2.weight") \
                else 0.02 * torch.randn_like(p) if p.ndim > 1 else 0.01 * torch.randn_like(p)
            if "embedding" in name:
                value = torch.randn_like(p)
            p.copy_(value.bfloat16().float())
        state.update({prefix + k: v.bfloat16().contiguous() for k, v in module.state_dict().items()})
save_file(state, str(out / "model.safetensors"))
processor = GlmImageImageProcessorPil(**MODEL_PROCESSOR)
photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
images = [Image.open(photo).convert("RGB"), photo_like(160, 160, 2)]
images[0].save(out / "grace_hopper.png")
batch = processor(images=images, return_tensors="pt")
with torch.no_grad():
    features = visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output
    ids, start = [], 0
    for _, h, w in batch["image_grid_thw"].tolist():
        fmap = features[start:start + h * w].view(1, h, w, -1).permute(0, 3, 1, 2)
        ids.append(vq.encode(fmap).image_tokens)
        start += h * w
save_arrays(out / "vision_fullsize.npz", pixels=batch["pixel_values"], grid=batch["image_grid_thw"],
            features=features, ids=torch.cat(ids))
