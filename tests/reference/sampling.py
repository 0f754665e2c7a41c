"""Reference logits processors (temperature, top-k, top-p) on fixed logits."""
import torch
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from common import out_dir, save_arrays, seed_all

out = out_dir()
seed_all(0)
logits = torch.randn(3, 50) * 3
results = {"logits": logits}
for name, temperature, top_k, top_p in [("default", 0.9, 0, 0.75), ("topk", 1.0, 5, 1.0), ("both", 0.7, 10, 0.5)]:
    procs = LogitsProcessorList([TemperatureLogitsWarper(temperature)]
                                + ([TopKLogitsWarper(top_k)] if top_k else [])
                                + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
    results[name] = procs(torch.zeros(3, 1, dtype=torch.long), logits.clone())
save_arrays(out / "warped.npz", **results)
