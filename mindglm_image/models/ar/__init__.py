"""Autoregressive half: GLM-4 text decoder with mrope, vision encoder, VQ quantizer."""
