"""Glyph-byT5 text encoder (T5 encoder stack) for the quoted text in a prompt."""
