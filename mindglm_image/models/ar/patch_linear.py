"""Convolutions whose kernel covers the whole window (kernel == stride, no padding) as a matmul.

The vision patch embedding (kernel = stride = patch) and the VQ 1x1 convolutions are such
convolutions: on inputs already flattened per window they are a linear map. Computing them that way
avoids a conv kernel (``mint`` conv2d has no CPU kernel in MindSpore 2.10) and keeps the parameters in
``torch.nn.Conv2d``'s layout and names, so checkpoints load unchanged.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, nn
from mindspore.common.initializer import Zero

from ..layers import _param


class PatchLinear(nn.Cell):
    """y = x W'^T + b where W' is the conv weight (out, in, k, k) flattened to (out, in*k*k).

    ``x`` is (..., in*k*k), each window flattened channel-major (in, k, k), as patchified images are.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.out_channels = out_channels
        self.weight = _param((out_channels, in_channels, kernel_size, kernel_size), dtype)
        self.bias = _param((out_channels,), dtype, Zero())

    def construct(self, x):
        return mint.nn.functional.linear(x, self.weight.reshape(self.out_channels, -1), self.bias)
