"""Vision encoder of the AR model: turns patchified reference images into per-patch features.

Several images of different grid sizes are packed into one sequence. Everything that depends on the
grids (the bilinear resampling of the learned position table, the per-image attention mask) is computed
on the host by ``vision_inputs`` so the compiled graph only sees fixed-shape tensors.
"""
from __future__ import annotations

import dataclasses

import mindspore as ms
import numpy as np
from mindspore import mint, nn

from ...config.ar import GlmImageVisionConfig
from ...graph_inputs import graph_input
from ...ops import resolve
from ...ops.attention import MASKED
from ..layers import Conv2d, Embedding, LayerNorm, Linear

_GELU_APPROXIMATION = {"gelu": "none", "gelu_pytorch_tanh": "tanh", "gelu_new": "tanh"}


@dataclasses.dataclass(frozen=True)
class VisionInputs:
    """Host-computed, grid-dependent inputs of ``GlmImageVisionModel`` for one packed batch of images.

    pos_index (N, 4) int32: rows of the position table at the 4 bilinear neighbours of each patch.
    pos_weight (N, 4) float32: their bilinear weights (zero for neighbours outside the table).
    attn_mask (N, N) float32: 0 inside an image, a large negative value across images.
    """

    pos_index: np.ndarray
    pos_weight: np.ndarray
    attn_mask: np.ndarray


def _check_grid(grid_thw: np.ndarray) -> np.ndarray:
    grid = np.asarray(grid_thw, dtype=np.int64)
    if grid.ndim != 2 or grid.shape[1] != 3 or len(grid) == 0:
        raise ValueError(f"image_grid_thw must have shape (num_images, 3), got {grid.shape}")
    if (grid[:, 0] != 1).any():
        raise ValueError(f"image_grid_thw: temporal size must be 1 for images, got {grid[:, 0].tolist()}")
    if (grid[:, 1:] < 1).any():
        raise ValueError(f"image_grid_thw: grid sizes must be positive, got {grid.tolist()}")
    return grid


def _bilinear_taps(coord: np.ndarray, target: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D taps of bilinear resampling from ``target`` cells onto a table of ``size`` cells.

    Patch centres are mapped to normalised coordinates in (-1, 1), then to table coordinates with
    half-pixel alignment and clamped to the table (border padding). Arithmetic is fp32, matching the
    reference's sampler. Returns (low index, high index, weight of the high index).
    """
    f32 = np.float32
    norm = (coord.astype(f32) + f32(0.5)) / target.astype(f32) * f32(2) - f32(1)
    pos = ((norm + f32(1)) * f32(size) - f32(1)) / f32(2)
    pos = np.clip(pos, f32(0), f32(size - 1))
    low = np.floor(pos)
    frac = (pos - low).astype(f32)
    low = low.astype(np.int64)
    high = np.minimum(low + 1, size - 1)  # a clamped tap at the far edge always has weight 0
    return low, high, frac


def vision_inputs(grid_thw: np.ndarray, position_grid: int) -> VisionInputs:
    """Compute the grid-dependent inputs for images with grids ``grid_thw`` (num_images, 3) of (1, h, w).

    ``position_grid`` is the side of the learned position table (``config.position_grid``).
    Patches are ordered row-major within each image, images one after another.
    """
    grid = _check_grid(grid_thw)
    rows, cols, heights, widths, image_of = [], [], [], [], []
    for i, (_, h, w) in enumerate(grid.tolist()):
        r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        rows.append(r.ravel())
        cols.append(c.ravel())
        heights.append(np.full(h * w, h))
        widths.append(np.full(h * w, w))
        image_of.append(np.full(h * w, i))
    row, col = np.concatenate(rows), np.concatenate(cols)
    y0, y1, fy = _bilinear_taps(row, np.concatenate(heights), position_grid)
    x0, x1, fx = _bilinear_taps(col, np.concatenate(widths), position_grid)
    one = np.float32(1)
    index = np.stack([y0 * position_grid + x0, y0 * position_grid + x1,
                      y1 * position_grid + x0, y1 * position_grid + x1], axis=1).astype(np.int32)
    weight = np.stack([(one - fy) * (one - fx), (one - fy) * fx, fy * (one - fx), fy * fx], axis=1).astype(np.float32)
    image = np.concatenate(image_of)
    mask = np.where(image[:, None] == image[None, :], np.float32(0), np.float32(MASKED)).astype(np.float32)
    return VisionInputs(index, weight, mask)


class GlmImageVisionEmbeddings(nn.Cell):
    """Adds the learned position table, resampled bilinearly to each image's grid."""

    def __init__(self, config: GlmImageVisionConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.position_embedding = Embedding(config.position_grid ** 2, config.hidden_size, dtype=dtype)

    def construct(self, embeddings, pos_index, pos_weight):
        taps = self.position_embedding(pos_index).astype(ms.float32)          # (N, 4, D)
        pos = mint.sum(taps * pos_weight.astype(ms.float32).unsqueeze(-1), 1)  # (N, D)
        return embeddings + pos.astype(self.position_embedding.weight.dtype)


class GlmImageVisionPatchEmbed(nn.Cell):
    """Projects each flattened (C, p, p) patch with a stride-p convolution."""

    def __init__(self, config: GlmImageVisionConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.in_channels = config.in_channels
        self.patch = config.patch
        self.hidden = config.hidden_size
        self.proj = Conv2d(config.in_channels, config.hidden_size, config.patch, stride=config.patch, dtype=dtype)

    def construct(self, pixel_values):
        x = pixel_values.reshape(-1, self.in_channels, self.patch, self.patch).astype(self.proj.weight.dtype)
        return self.proj(x).reshape(-1, self.hidden)


class GlmImageVisionAttention(nn.Cell):
    """Multi-head self-attention over the packed sequence; the mask keeps it within each image."""

    def __init__(self, config: GlmImageVisionConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.scaling = self.head_dim ** -0.5
        self.qkv = Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias, dtype=dtype)
        self.proj = Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias, dtype=dtype)
        self.attention = resolve("attention").fn

    def construct(self, x, attn_mask):
        n = x.shape[0]
        qkv = self.qkv(x).reshape(1, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, 1, H, N, d)
        out = self.attention(qkv[0], qkv[1], qkv[2], self.scaling, attn_mask)
        return self.proj(out[0].permute(1, 0, 2).reshape(n, -1))


class GlmImageVisionMLP(nn.Cell):
    """fc1 -> GELU (exact or tanh, from the config) -> fc2."""

    def __init__(self, config: GlmImageVisionConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        if config.hidden_act not in _GELU_APPROXIMATION:
            raise ValueError(f"vision_config.hidden_act={config.hidden_act!r} is not supported; "
                             f"use one of {sorted(_GELU_APPROXIMATION)}")
        self.approximate = _GELU_APPROXIMATION[config.hidden_act]
        self.fc1 = Linear(config.hidden_size, config.intermediate_size, dtype=dtype)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size, dtype=dtype)
        self.gelu = resolve("gelu").fn

    def construct(self, x):
        return self.fc2(self.gelu(self.fc1(x), self.approximate))


class GlmImageVisionBlock(nn.Cell):
    """Pre-norm transformer block (LayerNorm -> attention, LayerNorm -> MLP, residual adds)."""

    def __init__(self, config: GlmImageVisionConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.norm1 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, dtype=dtype)
        self.norm2 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, dtype=dtype)
        self.attn = GlmImageVisionAttention(config, dtype)
        self.mlp = GlmImageVisionMLP(config, dtype)

    def construct(self, x, attn_mask):
        x = x + self.attn(self.norm1(x), attn_mask)
        return x + self.mlp(self.norm2(x))


class GlmImageVisionModel(nn.Cell):
    """Vision encoder: packed patches (N, C*p*p) -> features (N, hidden_size).

    Call ``encode(pixel_values, grid_thw)`` from host code; ``construct`` takes the tensors made by
    ``vision_inputs`` so that it compiles once per sequence length.
    """

    def __init__(self, config: GlmImageVisionConfig, dtype: ms.Type = ms.float32):
        super().__init__()
        self.config = config
        self.compute_dtype = dtype
        self.embeddings = GlmImageVisionEmbeddings(config, dtype)
        self.patch_embed = GlmImageVisionPatchEmbed(config, dtype)
        self.blocks = nn.CellList([GlmImageVisionBlock(config, dtype) for _ in range(config.depth)])

    def construct(self, pixel_values, pos_index, pos_weight, attn_mask):
        x = self.embeddings(self.patch_embed(pixel_values), pos_index, pos_weight)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x

    def encode(self, pixel_values: np.ndarray | ms.Tensor, grid_thw: np.ndarray) -> ms.Tensor:
        """Features (total_patches, hidden_size) of the images packed in ``pixel_values``."""
        grid = _check_grid(grid_thw)
        patch_dim = self.config.in_channels * self.config.patch ** 2
        total = int(grid.prod(-1).sum())
        if tuple(pixel_values.shape) != (total, patch_dim):
            raise ValueError(
                f"pixel_values has shape {tuple(pixel_values.shape)} but image_grid_thw {grid.tolist()} needs "
                f"({total}, {patch_dim}); preprocess the images with the matching image processor "
                "(patch_size equal to the vision encoder's, temporal_patch_size 1, merge_size 1)"
            )
        inputs = vision_inputs(grid, self.config.position_grid)
        return self(graph_input("pixel_values", pixel_values, self.compute_dtype), ms.Tensor(inputs.pos_index),
                    ms.Tensor(inputs.pos_weight), ms.Tensor(inputs.attn_mask))
