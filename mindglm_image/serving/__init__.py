"""OpenAI-compatible images server (``mindglm-image serve``)."""
