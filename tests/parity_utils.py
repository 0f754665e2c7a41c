"""Comparison helpers for parity tests: one metric, used everywhere."""
from __future__ import annotations

import numpy as np


def rel_error(ours, ref) -> float:
    """max |ours - ref| / max |ref| (the issue's tolerance metric)."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    scale = np.abs(ref).max()
    assert scale > 0, "reference tensor is all zeros: the comparison would prove nothing"
    return float(np.abs(ours - ref).max() / scale)


def assert_parity(report: dict, name: str, ours, ref, tol: float = 1e-5) -> float:
    """Assert relative error <= tol and record it in the parity report under ``name``."""
    err = rel_error(ours, ref)
    report[name] = max(err, report.get(name, 0.0))
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.0e}"
    return err


def load_converted(name: str, hf_folder, work, max_shard_bytes: int = 64 * 1024):
    """The product path of every parity test: convert the reference's HF component folder into ours
    (re-sharded, so the index is exercised), then build and load the cell from it."""
    from pathlib import Path

    from ckpt_convert.convert import ConversionConfig, convert_component
    from mindglm_image.weights.components import COMPONENTS, load_component

    spec = COMPONENTS[name]
    ms_dir = convert_component(spec, Path(hf_folder), Path(work) / name, ConversionConfig(max_shard_bytes=max_shard_bytes))
    return load_component(spec, ms_dir)
