"""Registration of the AscendC custom operators of ``kernels/ascendc`` through ``ops.Custom``.

They exist on a machine once their custom-op package is built and installed (``kernels/ascendc/build.sh``),
which puts its folder on ``ASCEND_CUSTOM_OPP_PATH``; ``installed()`` checks that, and the registry uses
them on Ascend only then (else the built-in fallbacks). On Ascend, ``func_type="aot"`` with an operator
name (no library path) makes MindSpore launch the installed AscendC kernel; shapes and dtypes are inferred
here in Python.
"""
from __future__ import annotations

import os

import mindspore as ms
from mindspore import mint, nn, ops
from mindspore.ops import CustomRegOp, DataType

VENDOR = "mindglm"  # the vendor name of our custom-op package (kernels/ascendc/build.sh)


def installed() -> bool:
    """Whether our custom-op package is on ``ASCEND_CUSTOM_OPP_PATH``."""
    return any(VENDOR in p for p in os.environ.get("ASCEND_CUSTOM_OPP_PATH", "").split(":"))


class AdaLayerNormAscendC(nn.Cell):
    """AscendC ``AdaLayerNorm``: LayerNorm and modulation in one pass over each row of x (B, S, D).

    epsilon is a (1,) fp32 input (read by the kernel), as in the CPU twin, so one primitive serves all."""

    def __init__(self):
        super().__init__()
        reg = (CustomRegOp("AdaLayerNorm").input(0, "x").input(1, "shift").input(2, "scale").input(3, "epsilon")
               .output(0, "y")
               .dtype_format(*[DataType.F32_Default] * 5)
               .dtype_format(*[DataType.BF16_Default] * 3, DataType.F32_Default, DataType.BF16_Default)
               .target("Ascend").get_op_info())
        self.kernel = ops.Custom("AdaLayerNorm", out_shape=lambda x, *_: x, out_dtype=lambda x, *_: x,
                                 func_type="aot", reg_info=reg)

    def construct(self, x, shift, scale, eps: float):
        return self.kernel(x, shift, scale, mint.full((1,), eps, dtype=ms.float32))


class AdamWEmaAscendC(nn.Cell):
    """AscendC ``AdamWEma``: (param, grad, exp_avg, exp_avg_sq, ema, step_scalars) -> the 4 new states in one pass
    (``ops/adamw_ema.AdamWEma``'s maths); the betas, eps and decays are the kernel's attributes."""

    def __init__(self, beta1: float, beta2: float, eps: float, weight_decay: float, ema_decay: float):
        super().__init__()
        reg = CustomRegOp("AdamWEma")
        for i, name in enumerate(("param", "grad", "exp_avg", "exp_avg_sq", "ema", "step_scalars")):
            reg = reg.input(i, name)
        for i, name in enumerate(("param_out", "exp_avg_out", "exp_avg_sq_out", "ema_out")):
            reg = reg.output(i, name)
        for name, value in (("beta1", beta1), ("beta2", beta2), ("epsilon", eps), ("weight_decay", weight_decay),
                            ("ema_decay", ema_decay)):
            reg = reg.attr(name, "required", "float", value=value)
        reg = reg.dtype_format(*[DataType.F32_Default] * 10).target("Ascend").get_op_info()
        self.kernel = ops.Custom("AdamWEma", out_shape=lambda p, g, m, v, e, s: (p, p, p, p),
                                 out_dtype=lambda p, g, m, v, e, s: (p, p, p, p), func_type="aot", reg_info=reg)

    def construct(self, param, grad, exp_avg, exp_avg_sq, ema, step_scalars):
        return self.kernel(param, grad, exp_avg, exp_avg_sq, ema, step_scalars)
