"""Helpers for reference scripts (run inside the PyTorch reference environment, never by pytest)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch


def out_dir() -> Path:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} OUT_DIR")
    path = Path(sys.argv[1])
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_all(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)


def to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def save_arrays(path: Path, **arrays) -> None:
    np.savez(path, **{k: to_numpy(v) for k, v in arrays.items()})
