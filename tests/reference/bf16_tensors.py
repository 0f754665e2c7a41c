"""Write a bf16 + fp32 safetensors file with torch, and the exact fp32 values of each tensor."""
import torch
from safetensors.torch import save_file

from common import out_dir, save_arrays, seed_all

out = out_dir()
seed_all(0)
tensors = {
    "a.weight": torch.randn(7, 5).to(torch.bfloat16),
    "b.bias": torch.tensor([0.0, -0.0, 1e-40, 3.3895e38, float("inf"), -1.5]).to(torch.bfloat16),
    "c.f32": torch.randn(3, 4),
}
save_file(tensors, str(out / "mixed.safetensors"), metadata={"format": "pt"})
save_arrays(out / "values.npz", **{k.replace(".", "_"): v.float() for k, v in tensors.items()})
