"""Hugging Face (PyTorch) <-> MindSpore checkpoint conversion for GLM-Image components."""
from .convert import ConversionConfig, convert_component, expected_tensors

__all__ = ["ConversionConfig", "convert_component", "expected_tensors"]
