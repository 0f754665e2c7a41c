"""Training: LoRA, losses, prepared datasets (see the README section on training)."""
