"""CPU twins: C++ kernels from ``kernels/cpu`` run as MindSpore AOT custom operators."""
from __future__ import annotations

from typing import Callable


def cpu_twin(op: str) -> Callable | None:
    """The twin of ``op``, or None where it has none."""
    return None
