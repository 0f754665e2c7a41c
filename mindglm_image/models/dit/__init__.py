"""Diffusion decoder: the single-stream DiT (CogView4 lineage) with its reference-image KV cache."""
