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
