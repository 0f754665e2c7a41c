"""One place that decides how MindSpore runs: graph mode on the chosen device, dtype per device."""
from __future__ import annotations

import os

import mindspore as ms

_DEFAULT_DEVICE = "CPU"
DEVICES = ("CPU", "Ascend", "GPU")


class DeviceUnavailableError(ValueError):
    """The requested device is unknown or this MindSpore installation cannot run on it."""


def setup_runtime(device: str | None = None, graph_mode: bool = True) -> str:
    """Set MindSpore's execution mode and device once per process.

    The device comes from the argument, else ``MINDGLM_DEVICE``, else CPU (CI has no NPU).
    Returns the device in use so callers can pick the compute dtype from it.
    """
    requested = device or os.environ.get("MINDGLM_DEVICE", _DEFAULT_DEVICE)
    device = {d.lower(): d for d in DEVICES}.get(str(requested).lower())
    if device is None:
        raise DeviceUnavailableError(f"device {requested!r} is not one of {', '.join(DEVICES)} "
                                     "(--device or $MINDGLM_DEVICE)")
    ms.set_context(mode=ms.GRAPH_MODE if graph_mode else ms.PYNATIVE_MODE)
    try:
        ms.set_device(device)
    except RuntimeError as err:  # MindSpore's message ends in a C++ stack; keep the gist
        raise DeviceUnavailableError(
            f"device {device} is not available: this MindSpore installation cannot load its runtime "
            f"({str(err).splitlines()[0][:200]}). Install MindSpore for {device} with its driver stack "
            "(CANN for Ascend), or use --device CPU") from None
    return device


def reference_env() -> dict[str, str]:
    """This process's environment without the OpenMP defaults the package set itself (``OMP_DEFAULTS``), for
    the reference (torch) processes of the benchmarks: they run as their users would run them."""
    import mindglm_image

    env = dict(os.environ)
    if mindglm_image.OMP_DEFAULTS_APPLIED:
        for name in mindglm_image.OMP_DEFAULTS:
            env.pop(name, None)
    return env


def default_compute_dtype(device: str) -> ms.Type:
    """bf16 on Ascend (the checkpoint's dtype); fp32 on CPU where bf16 MatMul is unsupported."""
    return ms.bfloat16 if device == "Ascend" else ms.float32
