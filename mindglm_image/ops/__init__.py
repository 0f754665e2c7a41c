"""Operators every model cell calls, each with a composite MindSpore definition (the oracle), the Ascend
built-in fused kernel and, on CPU, a C++ twin where one exists; ``registry.resolve`` picks one."""
from .registry import KERNEL_MODES, Implementation, inference_cells, kernel_mode, resolve

__all__ = ["KERNEL_MODES", "Implementation", "inference_cells", "kernel_mode", "resolve"]
