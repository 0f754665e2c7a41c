"""The generation pipeline: AR prior tokens, glyph embeddings, CFG flow-match denoising, VAE decode."""
