"""One idiom for host values that enter a compiled graph: ``graph_input(name, value, dtype, shape)``, and
one for the lengths they are padded to: ``bucketed(length, bucket)``.

Graphs are compiled per input dtype and shape, so a stray int64 or float64 would compile a second graph
and a wrong shape would fail deep inside MindSpore; this checks both up front with a message naming
the input. Tensors are never read back to the host (device-resident tokens stay on the device).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor

_EXACT = (ms.bool_, ms.int8, ms.int16, ms.int32, ms.int64, ms.uint8, ms.uint16, ms.uint32, ms.uint64)
_NUMPY = {ms.bool_: np.bool_, ms.int32: np.int32, ms.int64: np.int64, ms.float16: np.float16, ms.float32: np.float32}


def bucketed(length: int, bucket: int) -> int:
    """``length`` rounded up to a multiple of ``bucket`` (``bucket`` <= 0: unchanged): inputs padded to it
    share one compiled graph across nearby lengths."""
    return -(-length // bucket) * bucket if bucket > 0 else length


def graph_input(name: str, value, dtype: ms.Type, shape: tuple[int, ...] | None = None, hint: str = "") -> Tensor:
    """``value`` (Tensor, numpy array or nested sequence) as a ``dtype`` Tensor of ``shape`` (None: any).

    An integer ``dtype`` refuses float values (a float id is a caller bug, not something to round);
    ``hint`` is appended to the shape error (how to build the input right).
    """
    if isinstance(value, Tensor):
        exact = value.dtype in _EXACT
    else:
        value = np.asarray(value)
        exact = np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}{hint}")
    if dtype in _EXACT and not exact:
        raise ValueError(f"{name} must hold integers, got dtype {value.dtype}")
    if not isinstance(value, Tensor):
        if dtype in _NUMPY:  # cast on the host: no extra device op
            return Tensor(value.astype(_NUMPY[dtype], copy=False))
        value = Tensor(value)  # bfloat16 and rarer types: numpy has no such dtype
    return value if value.dtype == dtype else value.astype(dtype)
