"""Basic cells whose parameters carry PyTorch's names (``weight``/``bias``) and layouts.

MindSpore's stock ``nn.Embedding``/``nn.LayerNorm`` name their parameters ``embedding_table``/``gamma``;
using these instead keeps every checkpoint key identical to the reference's.
Parameters are created lazily (``initializer``) so a real-size model allocates memory only when
weights are loaded into it.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import Normal, One, Zero, initializer

from ..ops import resolve


def _param(shape: tuple[int, ...], dtype: ms.Type, init=None) -> Parameter:
    return Parameter(initializer(init or Normal(0.02), shape, dtype))


class Linear(nn.Cell):
    """y = x W^T + b with W of shape (out, in), as in ``torch.nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: ms.Type = ms.float32):
        super().__init__()
        self.weight = _param((out_features, in_features), dtype)
        self.bias = _param((out_features,), dtype, Zero()) if bias else None
        self.linear = resolve("linear").fn

    def construct(self, x):
        return self.linear(x, self.weight, self.bias)


class Embedding(nn.Cell):
    """Row lookup in ``weight`` (num_embeddings, dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.weight = _param((num_embeddings, embedding_dim), dtype)

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


class LayerNorm(nn.Cell):
    """Layer norm computed in fp32 and cast back; affine parameters optional."""

    def __init__(self, dim: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 dtype: ms.Type = ms.float32):
        super().__init__()
        self.eps = eps
        self.weight = _param((dim,), dtype, One()) if elementwise_affine else None
        self.bias = _param((dim,), dtype, Zero()) if elementwise_affine and bias else None
        self.layer_norm = resolve("layer_norm").fn

    def construct(self, x):
        return self.layer_norm(x, self.eps, self.weight, self.bias)


class RMSNorm(nn.Cell):
    """RMS norm in fp32, cast back to the input dtype before the weight multiply (as the reference)."""

    def __init__(self, dim: int, eps: float = 1e-6, dtype: ms.Type = ms.float32):
        super().__init__()
        self.eps = eps
        self.weight = _param((dim,), dtype, One())
        self.rms_norm = resolve("rms_norm").fn

    def construct(self, x):
        return self.rms_norm(x, self.weight, self.eps)


class Conv2d(nn.Cell):
    """2-D convolution with ``torch.nn.Conv2d``'s weight layout (out, in, kh, kw)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, dtype: ms.Type = ms.float32):
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.weight = _param((out_channels, in_channels, kernel_size, kernel_size), dtype)
        self.bias = _param((out_channels,), dtype, Zero()) if bias else None
        self.conv2d = resolve("conv2d").fn

    def construct(self, x):
        return self.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class GroupNorm(nn.Cell):
    """Group norm over the channel axis of (B, C, ...) inputs, computed in fp32 and cast back."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 dtype: ms.Type = ms.float32):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels={num_channels} is not divisible by num_groups={num_groups}; "
                             "pick a group count that divides the channel count")
        self.num_groups = num_groups
        self.eps = eps
        self.weight = _param((num_channels,), dtype, One()) if affine else None
        self.bias = _param((num_channels,), dtype, Zero()) if affine else None

    def construct(self, x):
        dtype = x.dtype
        weight = self.weight.astype(ms.float32) if self.weight is not None else None
        bias = self.bias.astype(ms.float32) if self.bias is not None else None
        y = mint.nn.functional.group_norm(x.astype(ms.float32), self.num_groups, weight, bias, self.eps)
        return y.astype(dtype)
