"""CPU twins: the C++ kernels of ``kernels/cpu`` run as MindSpore AOT custom operators (graph mode, CPU).

The shared library is compiled with g++ on first use and cached under ``$MINDGLM_KERNEL_CACHE`` (default
``~/.cache/mindglm_image/kernels``) in a folder keyed by the hash of the source, the flags and the CPU's
feature flags (``-march=native``), so an edited kernel or another machine rebuilds. No compiler, or a
failed build, logs one warning naming the fix and leaves every operator on its composite.
Twins are fp32 kernels: other dtypes take the composite inside the same call (resolved at compile time).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import mindspore as ms
from mindspore import mint, nn, ops

from . import attention, euler_step, gated_activation, gated_residual, gelu, layer_norm, linear, rms_norm, rotary

SOURCE = Path(__file__).resolve().parents[2] / "kernels" / "cpu" / "mindglm_kernels.cc"
_FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
_log = logging.getLogger(__name__)


def _cpu_flags() -> bytes:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return b""
    return next((line for line in lines if line.startswith("flags")), "").encode()


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++")


@functools.lru_cache(maxsize=1)
def library() -> Path | None:
    """Path of the compiled kernels (built now if not cached), or None when it cannot be built."""
    cxx = _compiler()
    if cxx is None:
        _log.warning("no C++ compiler (g++ or $CXX) found, so the CPU twins of the fused kernels cannot be built; "
                     "install g++ (apt-get install g++) for them, or set MINDGLM_KERNELS=composite -- using the "
                     "composite operators")
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((cxx,) + _FLAGS).encode() + _cpu_flags()).hexdigest()[:16]
    cache = Path(os.environ.get("MINDGLM_KERNEL_CACHE", Path.home() / ".cache" / "mindglm_image" / "kernels"))
    target = cache / key / "mindglm_kernels.so"
    if "OMP_WAIT_POLICY" not in os.environ:  # see mindglm_image/__init__.py
        _log.warning("the CPU twins' OpenMP threads will spin between kernels on the cores MindSpore's threads "
                     "need (MindSpore was imported before mindglm_image, so OMP_WAIT_POLICY=passive could not be "
                     "set): export OMP_WAIT_POLICY=passive before starting Python, or import mindglm_image first")
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run([cxx, *_FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
        if result.returncode != 0:
            _log.warning("building the CPU twins %s failed (%s), using the composite operators (set "
                         "MINDGLM_KERNELS=composite to skip the build):\n%s", SOURCE, cxx, result.stderr[-2000:])
            return None
        os.replace(built, target)  # atomic: a concurrent build never sees a half-written library
    _log.info("built CPU kernels %s", target)
    return target


def _custom(name: str, out_shape, out_dtype) -> ops.Custom:
    return ops.Custom(f"{library()}:{name}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")


def _scalar(value: float):
    """A graph-time constant as the (1,) fp32 tensor the kernels read it from."""
    return mint.full((1,), value, dtype=ms.float32)


class RmsNormTwin(nn.Cell):
    """``rms_norm`` by the C++ kernel ``RmsNorm``."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("RmsNorm", lambda x, w, e: x, lambda x, w, e: x)

    def construct(self, x, weight, eps: float):
        if x.dtype != ms.float32:
            return rms_norm.rms_norm(x, weight, eps)
        return self.kernel(x, weight, _scalar(eps))


class AddRmsNormTwin(nn.Cell):
    """``add_rms_norm`` by the C++ kernel ``AddRmsNorm`` (one pass: add, statistics, scale)."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("AddRmsNorm", lambda x, r, w, e: (x, x), lambda x, r, w, e: (x, x))

    def construct(self, x, residual, weight, eps: float):
        if x.dtype != ms.float32:
            return rms_norm.add_rms_norm(x, residual, weight, eps)
        return self.kernel(x, residual, weight, _scalar(eps))


class LayerNormTwin(nn.Cell):
    """``layer_norm`` by the C++ kernel ``LayerNorm`` (statistics and affine in one pass; a weight without a bias
    gets zeros)."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("LayerNorm", lambda x, *rest: x, lambda x, *rest: x)

    def construct(self, x, eps: float, weight=None, bias=None):
        if x.dtype != ms.float32:
            return layer_norm.layer_norm(x, eps, weight, bias)
        if weight is None:
            return self.kernel(x, _scalar(eps))
        if bias is None:
            bias = mint.zeros_like(weight)
        return self.kernel(x, weight, bias, _scalar(eps))


class AdaLayerNormTwin(nn.Cell):
    """``ada_layer_norm`` by the C++ kernel ``AdaLayerNorm`` (normalise and modulate in one pass)."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("AdaLayerNorm", lambda x, sh, sc, e: x, lambda x, sh, sc, e: x)

    def construct(self, x, shift, scale, eps: float):
        if x.dtype != ms.float32:
            return layer_norm.ada_layer_norm(x, shift, scale, eps)
        return self.kernel(x, shift, scale, _scalar(eps))


class AttentionTwin(nn.Cell):
    """``attention`` by the C++ kernels ``Attention`` (BNSD) and ``AttentionBsnd`` (BSND, read and written in
    place): online softmax over key tiles, no score matrix."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("Attention", lambda q, k, v, b, s: q, lambda q, k, v, b, s: q)
        self.kernel_bsnd = _custom("AttentionBsnd", lambda q, k, v, b, s: q, lambda q, k, v, b, s: q)

    def construct(self, query, key, value, scale: float, bias=None, layout: str = "BNSD"):
        if query.dtype != ms.float32:
            return attention.attention(query, key, value, scale, bias, layout)
        if bias is None:
            bias = mint.zeros((1, 1, 1, key.shape[1 if layout == "BSND" else 2]), dtype=ms.float32)
        else:
            bias = bias.reshape((1,) * (4 - bias.ndim) + tuple(bias.shape))  # (N, N) vision mask -> (1, 1, N, N)
        if layout == "BSND":
            return self.kernel_bsnd(query, key, value, bias, _scalar(scale))
        return self.kernel(query, key, value, bias, _scalar(scale))


# The Linear kernel's range: a few rows (a decode step's batch) against a weight too large for the cache,
# where reading the weight bounds the time (bench_kernels.py: `ar_decode_linear*`); elsewhere MatMul's GEMM
# is the faster one.
LINEAR_MAX_ROWS = 16
LINEAR_MIN_WEIGHT = 1 << 18  # elements (1 MiB in fp32)


def linear_uses_kernel(x_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> bool:
    """Whether ``LinearTwin`` runs the kernel for these static shapes (fp32), else the composite."""
    rows = 1
    for size in x_shape[:-1]:
        rows *= size
    return rows <= LINEAR_MAX_ROWS and weight_shape[0] * weight_shape[1] >= LINEAR_MIN_WEIGHT


class LinearTwin(nn.Cell):
    """``linear`` by the C++ kernel ``Linear`` where ``linear_uses_kernel`` (decode steps), the composite
    (MatMul) elsewhere: decided per call site at compile time from the static shapes."""

    def __init__(self):
        super().__init__()
        out_shape = lambda x, w, *b: list(x[:-1]) + [w[0]]  # noqa: E731
        self.kernel = _custom("Linear", out_shape, lambda x, w, *b: x)

    def construct(self, x, weight, bias=None):
        if x.dtype != ms.float32 or not linear_uses_kernel(x.shape, weight.shape):
            return linear.linear(x, weight, bias)
        if bias is None:
            return self.kernel(x, weight)
        return self.kernel(x, weight, bias)


class RotaryTwin(nn.Cell):
    """``apply_rotary`` by the C++ kernel ``Rotary`` (rotate-half and pass-through in one pass); the tables are
    given x's rank here, so the kernel broadcasts them over leading axes of size 1."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("Rotary", lambda x, c, s: x, lambda x, c, s: x)

    def construct(self, x, cos, sin):
        if x.dtype != ms.float32 or cos.dtype != ms.float32:
            return rotary.apply_rotary(x, cos, sin)
        lead = (1,) * (len(x.shape) - len(cos.shape))
        return self.kernel(x, cos.reshape(lead + cos.shape), sin.reshape(lead + sin.shape))


class GeluTwin(nn.Cell):
    """``gelu``'s tanh form by the C++ kernel ``GeluTanh`` (the vector exp); the erf form stays the built-in."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("GeluTanh", lambda x: x, lambda x: x)

    def construct(self, x, approximate: str):
        if x.dtype != ms.float32 or approximate != "tanh":
            return gelu.gelu(x, approximate)
        return self.kernel(x)


class SwiGluTwin(nn.Cell):
    """``swiglu`` by the C++ kernel ``SwiGlu`` (split, SiLU and product in one pass)."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("SwiGlu", lambda x: list(x[:-1]) + [x[-1] // 2], lambda x: x)

    def construct(self, gate_up):
        if gate_up.dtype != ms.float32:
            return gated_activation.swiglu(gate_up)
        return self.kernel(gate_up)


class GatedResidualTwin(nn.Cell):
    """``gated_residual`` by the C++ kernel ``GatedResidual``: one pass where the composite runs ExpandDims,
    BroadcastTo (a (B, S, D) copy of the gate), Mul and Add."""

    def __init__(self):
        super().__init__()
        self.kernel = _custom("GatedResidual", lambda x, y, g: x, lambda x, y, g: x)

    def construct(self, x, y, gate):
        if x.dtype != ms.float32 or y.dtype != ms.float32 or gate.dtype != ms.float32:
            return gated_residual.gated_residual(x, y, gate)
        return self.kernel(x, y, gate)


class SampleStepTwin(nn.Cell):
    """``sample_step`` by the C++ kernel ``SampleStep``: one kernel where the composite runs about 45 (sort,
    softmaxes, cumulative sums, gathers, the end-marker and non-finite bookkeeping), each a kernel launch in a
    decode step."""

    def __init__(self):
        super().__init__()
        shapes = lambda logits, index, uniforms, params, limits, finished, flags, tokens, end: (  # noqa: E731
            [logits[0], 1], finished, flags, tokens)
        self.kernel = _custom("SampleStep", shapes, lambda *types: (ms.int32,) * 4)

    def construct(self, logits, index, uniforms, params, limits, finished, flags, tokens, end_token_id: int):
        end = ms.Tensor([end_token_id], ms.int32)  # a constant of the graph (mint.full would run a fill kernel)
        return self.kernel(logits.astype(ms.float32), index, uniforms, params, limits, finished, flags, tokens, end)


class GuidedEulerStepTwin(nn.Cell):
    """``guided_euler_step`` by the C++ kernel ``GuidedEulerStep``: one pass over the latents where the composite
    runs about 20 kernels (the guidance mix, the step, the non-finite count and record, the doubled next input)."""

    def __init__(self):
        super().__init__()
        shapes = lambda out, x, dt, index, guidance, record: (x, out, record)  # noqa: E731
        self.kernel = _custom("GuidedEulerStep", shapes, lambda out, x, *rest: (ms.float32, ms.float32, ms.int32))

    def construct(self, output, latents, dt, index, guidance, record):
        if latents.dtype != ms.float32:
            return euler_step.guided_euler_step(output, latents, dt, index, guidance, record)
        return self.kernel(output.astype(ms.float32), latents, dt, index, guidance, record)


_TWINS = {"rms_norm": RmsNormTwin, "add_rms_norm": AddRmsNormTwin, "layer_norm": LayerNormTwin,
          "ada_layer_norm": AdaLayerNormTwin, "attention": AttentionTwin, "linear": LinearTwin, "rotary": RotaryTwin,
          "swiglu": SwiGluTwin, "gated_residual": GatedResidualTwin, "gelu": GeluTwin, "sample_step": SampleStepTwin,
          "guided_euler_step": GuidedEulerStepTwin}


TWIN_TYPES = tuple(_TWINS.values())


def has_twin(op: str) -> bool:
    """Whether ``op`` has a twin and the kernels are built (building them on first call)."""
    return op in _TWINS and library() is not None


def cpu_twin(op: str) -> nn.Cell:
    """A new twin cell of ``op``: each calling cell owns its own."""
    return _TWINS[op]()
