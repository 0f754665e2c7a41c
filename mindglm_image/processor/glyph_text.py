"""Quoted text in a prompt: the strings the image should render, fed to the Glyph-byT5 encoder.

Spans are collected per quote style in a fixed order, all '...' spans, then “...”, then "...", then
「...」 (not in order of appearance), because the reference pipeline does so and the glyph embeddings
follow that order.
"""
from __future__ import annotations

import re

_QUOTE_PATTERNS = (
    re.compile(r"'([^']*)'"),
    re.compile("\u201c([^\u201c\u201d]*)\u201d"),
    re.compile(r'"([^"]*)"'),
    re.compile("\u300c([^\u300c\u300d]*)\u300d"),
)


def extract_glyph_texts(prompt: str | list[str]) -> list[list[str]]:
    """One list of quoted spans per prompt (a single string counts as a batch of one)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    for p in prompts:
        if not isinstance(p, str):
            raise TypeError(f"extract_glyph_texts: prompts must be strings, got {type(p).__name__}")
    return [[span for pattern in _QUOTE_PATTERNS for span in pattern.findall(p)] for p in prompts]
