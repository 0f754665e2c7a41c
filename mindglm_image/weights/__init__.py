"""Reading, writing and loading model weights (safetensors, bf16-safe, streamed)."""
