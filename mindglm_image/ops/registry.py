"""The one place that picks each operator's implementation, by device and ``MINDGLM_KERNELS``.

``MINDGLM_KERNELS=composite`` runs the readable MindSpore compositions everywhere (the oracle);
``fused`` picks the device's fused implementation: MindSpore's built-in Ascend kernels on Ascend (our
AscendC operators of ``kernels/ascendc`` instead where their package is installed), the
C++ twins of ``kernels/cpu`` on CPU (the composite where an operator has none, or no compiler was
found). Unset: fused on Ascend; on CPU fused for the cells built inside ``inference_cells`` (the pipeline's)
and composite for the rest, because the twins are forward-only and training needs the composites'
gradients. Cells resolve their operators once, when built (graph mode compiles the chosen Python function
like any other), and the choice is logged once per (device, mode).
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import os
from typing import Callable, Iterator

import mindspore as ms

from . import (adamw_ema, ascendc, attention, conv2d, cpu_twins, euler_step, gated_activation, gated_residual, gelu,
               layer_norm, linear, rms_norm, rotary, sample_token)

KERNEL_MODES = ("composite", "fused")
_ENV = "MINDGLM_KERNELS"
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One operator's chosen implementation: ``kind`` is composite, ascend (built-in), ascendc (our custom
    operator) or cpu_twin."""

    op: str
    kind: str
    fn: Callable  # a function, or for a CPU twin / AscendC op a Cell of its own


# operator -> (composite, Ascend built-in or None)
_OPS: dict[str, tuple[Callable, Callable | None]] = {
    "attention": (attention.attention, attention.attention_ascend),
    "conv2d": (conv2d.conv2d, None),  # the built-in Conv2D on every device (ops/conv2d.py)
    "linear": (linear.linear, linear.linear_ascend),
    "rms_norm": (rms_norm.rms_norm, rms_norm.rms_norm_ascend),
    "add_rms_norm": (rms_norm.add_rms_norm, rms_norm.add_rms_norm_ascend),
    "layer_norm": (layer_norm.layer_norm, layer_norm.layer_norm_ascend),
    "ada_layer_norm": (layer_norm.ada_layer_norm, layer_norm.ada_layer_norm_ascend),
    "rotary": (rotary.apply_rotary, rotary.apply_rotary_ascend),
    "swiglu": (gated_activation.swiglu, gated_activation.swiglu_ascend),
    "gated_residual": (gated_residual.gated_residual, gated_residual.gated_residual_ascend),
    "gelu": (gelu.gelu, None),  # the built-in GeLU on every device; a CPU twin for the tanh form
    "sample_step": (sample_token.sample_step, None),  # no Ascend fused op: the composite on Ascend
    "guided_euler_step": (euler_step.guided_euler_step, None),  # no Ascend fused op: the composite on Ascend
    "adamw_ema": (adamw_ema.AdamWEma, None),  # a Cell class: built with the optimizer's attributes (resolve)
}
# operator -> AscendC custom cell used on Ascend instead of the built-in when our op package is installed
_ASCENDC = {"ada_layer_norm": ascendc.AdaLayerNormAscendC, "adamw_ema": ascendc.AdamWEmaAscendC}
_logged: set[tuple[str, str]] = set()
_INFERENCE = contextvars.ContextVar("mindglm_inference_cells", default=False)


@contextlib.contextmanager
def inference_cells() -> Iterator[None]:
    """Cells built inside are never trained (a pipeline's), so with ``MINDGLM_KERNELS`` unset the CPU gives
    them the forward-only twins too. Per thread (a context variable): a stage worker building its pipeline
    does not change what another thread builds."""
    token = _INFERENCE.set(True)
    try:
        yield
    finally:
        _INFERENCE.reset(token)


def kernel_mode(device: str) -> str:
    """``MINDGLM_KERNELS`` if set (checked); else fused on Ascend, fused on CPU inside ``inference_cells``,
    composite elsewhere."""
    mode = os.environ.get(_ENV, "").strip().lower()
    if not mode:
        return "fused" if device == "Ascend" or (device == "CPU" and _INFERENCE.get()) else "composite"
    if mode not in KERNEL_MODES:
        raise ValueError(f"{_ENV}={mode!r} is not one of {', '.join(KERNEL_MODES)}; unset it for the device default")
    return mode


def _kind(op: str, device: str, mode: str) -> str:
    """composite, ascendc, ascend or cpu_twin: what ``resolve`` picks (building the CPU kernels if needed)."""
    if mode == "fused" and device == "Ascend" and op in _ASCENDC and ascendc.installed():
        return "ascendc"
    if mode == "fused" and device == "Ascend" and _OPS[op][1] is not None:
        return "ascend"
    if mode == "fused" and device == "CPU" and cpu_twins.has_twin(op):
        return "cpu_twin"
    return "composite"


def resolve(op: str, device: str | None = None, mode: str | None = None, **attrs: float) -> Implementation:
    """The implementation of ``op`` on ``device`` (default: MindSpore's current device target).

    ``attrs``: the compile-time attributes of an operator that has them (``adamw_ema``'s betas, eps and decays);
    such an operator's implementations are Cell classes, built here with them."""
    device = device or ms.get_context("device_target")
    mode = mode or kernel_mode(device)
    if (device, mode) not in _logged:
        _logged.add((device, mode))
        table = ", ".join(f"{name}={_kind(name, device, mode)}" for name in _OPS)
        _log.info("kernels on %s (%s=%s): %s", device, _ENV, mode, table)
    kind = kind_of(op, device, mode)
    composite, ascend = _OPS[op]
    if kind == "ascendc":
        return Implementation(op, kind, _ASCENDC[op](**attrs))
    fn = {"composite": composite, "ascend": ascend}.get(kind) or cpu_twins.cpu_twin(op)
    if isinstance(fn, type):  # an operator with attributes: its implementation is a Cell class
        fn = fn(**attrs)
    elif attrs:
        raise TypeError(f"operator {op!r} takes no attributes, got {', '.join(attrs)}")
    return Implementation(op, kind, fn)


def kind_of(op: str, device: str, mode: str) -> str:
    """Which kind ``resolve`` picks for ``op`` on ``device`` under ``mode``, without building a cell."""
    if op not in _OPS:
        raise KeyError(f"unknown operator {op!r}; known: {', '.join(_OPS)}")
    return _kind(op, device, mode)


def check_trainable(cell) -> None:
    """Refuse, naming the fix, a cell that holds forward-only CPU twins (a pipeline's, built inside
    ``inference_cells``): MindSpore would only fail inside the gradient graph, on an undefined Custom bprop."""
    twins = sorted({type(sub).__name__ for _, sub in cell.cells_and_names() if isinstance(sub, cpu_twins.TWIN_TYPES)})
    if twins:
        raise ValueError(f"this model holds forward-only CPU twins ({', '.join(twins)}), which cannot be trained: "
                         "build training models with weights.components.load_component outside a pipeline "
                         "(the training jobs do), or set MINDGLM_KERNELS=composite before building them")
