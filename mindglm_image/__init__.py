"""MindSpore-native GLM-Image: autoregressive prior generator + DiT decoder for Ascend (and CPU)."""
import os
import sys

__version__ = "0.1.0"

# OpenMP threads that sleep between parallel regions instead of spinning (libgomp reads this once, when
# MindSpore loads it, hence here, before any of our modules imports MindSpore). On CPU the C++ twins'
# threads otherwise spin on the cores MindSpore's own kernel threads need right after each twin, which made
# MINDGLM_KERNELS=fused slower than the composite in one A/B (README, Fused operators). A value the user exported is
# kept; ``runtime.reference_env`` hands the reference benchmarks the environment without this default.
OMP_DEFAULTS = {"OMP_WAIT_POLICY": "passive"}
OMP_DEFAULTS_APPLIED = "mindspore" not in sys.modules and not any(name in os.environ for name in OMP_DEFAULTS)
if OMP_DEFAULTS_APPLIED:
    os.environ.update(OMP_DEFAULTS)
