"""Building blocks of the AutoencoderKL encoder and decoder.

Attribute names follow diffusers' modules (``resnets``, ``downsamplers.0.conv``, ``attentions.0.to_q`` ...)
so every parameter name equals the reference ``state_dict`` key. The VAE uses no time embedding, so the
resnets here have none.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import mint, nn, ops

from ..layers import Conv2d, GroupNorm, Linear

#: epsilon of every group norm inside the VAE (diffusers hard-codes it for the encoder and decoder)
NORM_EPS = 1e-6


class ResnetBlock2D(nn.Cell):
    """norm-SiLU-conv twice plus a (1x1-projected when channels change) skip connection."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, NORM_EPS, dtype=dtype)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, dtype=dtype)
        self.norm2 = GroupNorm(groups, out_channels, NORM_EPS, dtype=dtype)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, dtype=dtype)
        self.conv_shortcut = Conv2d(in_channels, out_channels, 1, dtype=dtype) if in_channels != out_channels else None

    def construct(self, x):
        h = self.conv1(mint.nn.functional.silu(self.norm1(x)))
        h = self.conv2(mint.nn.functional.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample2D(nn.Cell):
    """Stride-2 3x3 conv after padding one zero row/column at the bottom/right only (diffusers' padding=0 path)."""

    def __init__(self, channels: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0, dtype=dtype)

    def construct(self, x):
        # graph-mode divergence: zeros concatenated rather than mint.nn.functional.pad; on MindSpore 2.10 CPU a
        # training graph with a chain of these pads hangs in a CPU kernel on its 10th run (the VAE encoder's
        # three Downsample2D: tests/test_train_vae_vq.py::test_vae_encoder_trains_past_ten_steps)
        b, c, h, w = x.shape
        x = mint.cat((x, mint.zeros((b, c, h, 1), dtype=x.dtype)), 3)
        x = mint.cat((x, mint.zeros((b, c, 1, w + 1), dtype=x.dtype)), 2)
        return self.conv(x)


class Upsample2D(nn.Cell):
    """Nearest-neighbour 2x upsampling (each pixel repeated 2x2) followed by a 3x3 conv."""

    def __init__(self, channels: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1, dtype=dtype)

    def construct(self, x):
        b, c, h, w = x.shape
        x = ops.broadcast_to(x.reshape(b, c, h, 1, w, 1), (b, c, h, 2, w, 2)).reshape(b, c, 2 * h, 2 * w)
        return self.conv(x)


class SpatialSelfAttention(nn.Cell):
    """Single-head self-attention over all pixels with a group norm in front and a residual add.

    The reference's mid-block ``Attention`` uses one head of width ``channels``; the softmax runs in fp32.
    """

    def __init__(self, channels: int, groups: int, dtype: ms.Type = ms.float32):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels, NORM_EPS, dtype=dtype)
        self.to_q = Linear(channels, channels, dtype=dtype)
        self.to_k = Linear(channels, channels, dtype=dtype)
        self.to_v = Linear(channels, channels, dtype=dtype)
        self.to_out = nn.CellList([Linear(channels, channels, dtype=dtype)])
        self.scale = channels ** -0.5

    def construct(self, x):
        b, c, h, w = x.shape
        tokens = self.group_norm(x).reshape(b, c, h * w).transpose(0, 2, 1)
        q = self.to_q(tokens)
        k = self.to_k(tokens)
        v = self.to_v(tokens)
        scores = mint.matmul(q, k.transpose(0, 2, 1)).astype(ms.float32) * self.scale
        probs = mint.nn.functional.softmax(scores, dim=-1).astype(v.dtype)
        out = self.to_out[0](mint.matmul(probs, v))
        return x + out.transpose(0, 2, 1).reshape(b, c, h, w)


class UNetMidBlock2D(nn.Cell):
    """resnet, (attention), resnet at the lowest resolution."""

    def __init__(self, channels: int, groups: int, add_attention: bool, dtype: ms.Type = ms.float32):
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock2D(channels, channels, groups, dtype) for _ in range(2)])
        self.attentions = nn.CellList([SpatialSelfAttention(channels, groups, dtype)]) if add_attention else None

    def construct(self, x):
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class DownEncoderBlock2D(nn.Cell):
    """``num_layers`` resnets, then an optional stride-2 downsample."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_downsample: bool,
                 dtype: ms.Type = ms.float32):
        super().__init__()
        self.resnets = nn.CellList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups, dtype)
            for i in range(num_layers)
        ])
        self.downsamplers = nn.CellList([Downsample2D(out_channels, dtype)]) if add_downsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock2D(nn.Cell):
    """``num_layers`` resnets, then an optional 2x upsample."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, add_upsample: bool,
                 dtype: ms.Type = ms.float32):
        super().__init__()
        self.resnets = nn.CellList([
            ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, groups, dtype)
            for i in range(num_layers)
        ])
        self.upsamplers = nn.CellList([Upsample2D(out_channels, dtype)]) if add_upsample else None

    def construct(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x
