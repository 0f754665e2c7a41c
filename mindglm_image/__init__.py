"""MindSpore-native GLM-Image: autoregressive prior generator + DiT decoder for Ascend (and CPU)."""

__version__ = "0.1.0"
