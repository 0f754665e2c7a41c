"""Non-finite detection: a NaN/inf anywhere in a generation fails it, naming the stage, instead of
becoming a black image (a NaN weight, an overflow in bf16, a guidance of inf)."""
from __future__ import annotations

import mindspore as ms
import numpy as np


class NonFiniteError(ValueError):
    """Numbers of a stage are NaN or infinite; nothing was written. (A ValueError: a bad model or input
    value, so the command line reports it as an error like any other bad value.)"""


def check_finite(values: np.ndarray | ms.Tensor, stage: str) -> np.ndarray:
    """``values`` as a float32 (tensors) or unchanged (arrays) numpy array if every entry is finite, else
    raise ``NonFiniteError`` naming ``stage``."""
    if isinstance(values, ms.Tensor):
        values = values.astype(ms.float32).asnumpy()  # numpy has no bf16
    finite = np.isfinite(values)
    if not finite.all():
        raise non_finite_error(stage, int(values.size - np.count_nonzero(finite)), values.size)
    return values


def non_finite_error(stage: str, bad: int, total: int) -> NonFiniteError:
    """The error for ``bad`` non-finite values of ``total`` (also raised from flags counted in a graph)."""
    return NonFiniteError(
        f"{stage} produced {bad} non-finite values (NaN/inf) of {total}; no image was written. "
        "Check the checkpoint's weights (mindglm-image verify), the guidance scale and, on bf16 devices, "
        "try float32")
