"""Load checkpoint tensors into a cell's parameters, checking every name, shape and dtype."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import mindspore as ms
import numpy as np
from mindspore import nn

from .safetensors_io import FLOAT_TAGS, CheckpointError, TensorData


def load_tensors_into_cell(cell: nn.Cell, tensors: Iterable[TensorData], source: str,
                           rename: Callable[[str], str] = lambda n: n) -> None:
    """Stream ``tensors`` into ``cell``; every parameter must be filled exactly once.

    ``rename`` maps a stored name to the cell's (e.g. strips a prefix to load one sub-module of a checkpoint).

    Values are cast to each parameter's own dtype (bf16 checkpoint -> fp32 cells on CPU, bf16 on Ascend).
    Raises ``CheckpointError`` naming the offending tensor and ``source`` on any mismatch.
    """
    params = cell.parameters_dict()
    seen: set[str] = set()
    extra: list[str] = []
    for t in tensors:
        name = rename(t.name)
        param = params.get(name)
        if param is None:
            extra.append(t.name)
            continue
        if tuple(param.shape) != t.shape:
            raise CheckpointError(
                f"{source}: tensor {t.name} has shape {list(t.shape)} but the model expects {list(param.shape)}; "
                "the checkpoint does not match config.json"
            )
        if t.dtype not in FLOAT_TAGS and param.dtype in (ms.float32, ms.float16, ms.bfloat16):
            raise CheckpointError(f"{source}: tensor {t.name} has dtype {t.dtype}, expected a floating dtype")
        value = t.array()
        if value.dtype != np.float32 and t.dtype in FLOAT_TAGS:
            value = value.astype(np.float32)
        param.set_data(ms.Tensor(value, dtype=param.dtype))
        seen.add(name)
    missing = sorted(set(params) - seen)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"unexpected {len(extra)} tensor(s): {sorted(extra)[:8]}{' ...' if len(extra) > 8 else ''}")
        raise CheckpointError(f"{source}: " + "; ".join(parts) + "; the checkpoint does not match this model")
