"""Processors: prompt/chat-template tokenization, reference-image preprocessing, glyph text."""
