"""Typed configs that read and write the Hugging Face / diffusers ``config.json`` files unchanged."""
from .base import ConfigError, HFConfig

__all__ = ["ConfigError", "HFConfig"]
