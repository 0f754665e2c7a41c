"""One place that decides how MindSpore runs: graph mode on the chosen device, dtype per device."""
from __future__ import annotations

import os

import mindspore as ms

_DEFAULT_DEVICE = "CPU"


def setup_runtime(device: str | None = None, graph_mode: bool = True) -> str:
    """Set MindSpore's execution mode and device once per process.

    The device comes from the argument, else ``MINDGLM_DEVICE``, else CPU (CI has no NPU).
    Returns the device in use so callers can pick the compute dtype from it.
    """
    device = device or os.environ.get("MINDGLM_DEVICE", _DEFAULT_DEVICE)
    ms.set_context(mode=ms.GRAPH_MODE if graph_mode else ms.PYNATIVE_MODE)
    ms.set_device(device)
    return device


def default_compute_dtype(device: str) -> ms.Type:
    """bf16 on Ascend (the checkpoint's dtype); fp32 on CPU where bf16 MatMul is unsupported."""
    return ms.bfloat16 if device == "Ascend" else ms.float32
