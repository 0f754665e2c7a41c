"""Training: configs, the AdamW+EMA optimizer, the shared train step, checkpoints, metrics, the loop, loss
cells (DiT flow matching, AR SFT), LoRA adapters and prepared datasets."""
