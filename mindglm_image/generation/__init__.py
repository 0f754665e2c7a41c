"""Autoregressive prior-token generation: sampling rules and the static-KV decoding loop."""
