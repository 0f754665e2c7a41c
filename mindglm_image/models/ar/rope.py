"""3-D rotary positions of the AR decoder ("mrope": temporal, height, width axes).

Text tokens advance one position per token on all three axes. A grid of image tokens of size (t, h, w)
starting at position ``p`` takes temporal ``p + i``, row ``p + y`` and column ``p + x``, and moves the
running position on by ``max(h, w)`` only, so grids are cheap in position space.

Positions depend on token values and grid sizes, so they are computed on the host (numpy) and fed to
the graph; the graph turns them into cos/sin tables (``MultimodalRotaryEmbedding``).
"""
from __future__ import annotations

import dataclasses

import mindspore as ms
import numpy as np
from mindspore import nn, ops


@dataclasses.dataclass(frozen=True)
class RopePositions:
    """Positions of one (batched, left-padded) prompt and of the tokens still to generate.

    ``prefill``: (3, B, L) int64; left-padding slots hold 1, as the reference leaves them.
    ``decode``: (B, 3, N) int64 or None: row ``k`` is the position of the ``k``-th generated token, i.e.
    the token fed at decode step ``k``: the target grids in reverse order of ``image_grid_thw``'s tail
    (T2I: the small preview grid first, then the full grid), then one end-marker position. Rows of
    shorter samples are padded by repeating their last position.
    """

    prefill: np.ndarray
    decode: np.ndarray | None

    def decode_step(self, step: int) -> np.ndarray:
        """Positions (3, B, 1) of the token fed at decode step ``step`` (0 = first generated token)."""
        if self.decode is None:
            raise ValueError("no decode positions: the prompt had no image grids (pass image_grid_thw)")
        if not 0 <= step < self.decode.shape[2]:
            raise ValueError(f"decode step {step} is outside the {self.decode.shape[2]} planned positions; "
                             "generate at most the tokens of the target grids plus the end marker")
        return np.ascontiguousarray(self.decode[:, :, step].T[:, :, None])


def vision_position_ids(start: int, grid_thw) -> np.ndarray:
    """(3, t*h*w) positions of one image grid whose first token sits at ``start``, row-major."""
    t, h, w = (int(v) for v in grid_thw)
    tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([tt, hh, ww]).reshape(3, -1).astype(np.int64) + start


def _split_grids(image_grid_thw, images_per_sample, batch_size: int) -> list[np.ndarray | None]:
    if image_grid_thw is None:
        return [None] * batch_size
    grids = np.asarray(image_grid_thw, dtype=np.int64)
    if grids.ndim != 2 or grids.shape[1] != 3:
        raise ValueError(f"image_grid_thw must have shape (num_images, 3), got {grids.shape}")
    if images_per_sample is None:
        # as the reference: without a split every sample uses all grids
        return [grids] * batch_size
    counts = [int(c) for c in np.asarray(images_per_sample).reshape(-1)]
    if len(counts) != batch_size or sum(counts) != len(grids):
        raise ValueError(f"images_per_sample {counts} must have one entry per sample ({batch_size}) and sum to "
                         f"the {len(grids)} rows of image_grid_thw")
    return list(np.split(grids, np.cumsum(counts)[:-1]))


def _sample_positions(ids: np.ndarray, grids: np.ndarray | None, start_id: int, end_id: int,
                      sample: int) -> tuple[np.ndarray, int, int]:
    """Prompt positions (3, n) of one unpadded sample, the running position after it, complete images."""
    ends = np.flatnonzero(ids == end_id)
    starts = np.flatnonzero(ids == start_id) + 1
    pieces, pos, prev_end = [], 0, 0
    for k, (start, end) in enumerate(zip(starts, ends)):
        if grids is None or k >= len(grids):
            break
        n_text = int(start) - prev_end
        pieces.append(np.arange(pos, pos + n_text, dtype=np.int64)[None].repeat(3, 0))
        pos += n_text
        grid = vision_position_ids(pos, grids[k])
        if grid.shape[1] != end - start:
            raise ValueError(
                f"sample {sample}: image {k} has {end - start} tokens between its start and end markers but "
                f"image_grid_thw row {grids[k].tolist()} needs {grid.shape[1]}; the grids must list the prompt's "
                "reference images in order, then the target grids"
            )
        pieces.append(grid)
        pos += int(max(grids[k][1], grids[k][2]))
        prev_end = int(end)
    n_text = len(ids) - prev_end
    pieces.append(np.arange(pos, pos + n_text, dtype=np.int64)[None].repeat(3, 0))
    return np.concatenate(pieces, axis=1), pos + n_text, len(ends)


def _decode_positions(pos: int, grids: np.ndarray, num_complete: int) -> np.ndarray:
    """(3, N) positions of the grids still to generate (last grid first) and the end marker."""
    pieces = []
    for grid in grids[len(grids) - max(len(grids) - num_complete, 0):][::-1]:
        h, w = int(grid[1]), int(grid[2])
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        pieces.append(np.stack([np.zeros(h * w, np.int64), rows.reshape(-1), cols.reshape(-1)]) + pos)
        pos += max(h, w)
    pieces.append(np.full((3, 1), pos, np.int64))
    return np.concatenate(pieces, axis=1)


def compute_rope_positions(input_ids, image_start_token_id: int, image_end_token_id: int, image_grid_thw=None,
                           images_per_sample=None, attention_mask=None) -> RopePositions:
    """Positions of a prompt batch, as the reference's ``GlmImageModel.get_rope_index``.

    ``input_ids`` (B, L) with left padding marked by ``attention_mask`` (B, L) zeros; ``image_grid_thw``
    (num_images, 3): per sample, the grids of its complete reference images in prompt order, then the
    target grids (T2I: full grid, then preview grid); ``images_per_sample`` (B,) splits the rows.
    """
    ids = np.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must have shape (batch, seq_len), got {ids.shape}")
    batch, seq_len = ids.shape
    if attention_mask is not None:
        mask = np.asarray(attention_mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {mask.shape} but input_ids has {ids.shape}; give one "
                             "0/1 entry per prompt token")
        valid = mask == 1
    else:
        valid = np.ones(ids.shape, dtype=bool)
    grids_per_sample = _split_grids(image_grid_thw, images_per_sample, batch)
    prefill = np.ones((3, batch, seq_len), dtype=np.int64)
    decode = []
    for b in range(batch):
        grids = grids_per_sample[b]
        positions, pos, complete = _sample_positions(ids[b][valid[b]], grids, image_start_token_id,
                                                     image_end_token_id, b)
        prefill[:, b, valid[b]] = positions
        if grids is not None and len(grids):
            decode.append(_decode_positions(pos, grids, complete))
    if not decode:
        return RopePositions(prefill, None)
    if len(decode) != batch:
        raise ValueError("some samples have image grids and some have none; give every sample its target grids")
    longest = max(d.shape[1] for d in decode)
    padded = [np.concatenate([d, d[:, -1:].repeat(longest - d.shape[1], 1)], axis=1) for d in decode]
    return RopePositions(prefill, np.stack(padded))


def rotary_inv_freq(rotary_dim: int, theta: float) -> np.ndarray:
    """(rotary_dim/2,) float32 inverse frequencies theta^(-2i/rotary_dim)."""
    exponents = np.arange(0, rotary_dim, 2, dtype=np.float32) / np.float32(rotary_dim)
    return (1.0 / (np.float64(theta) ** exponents.astype(np.float64))).astype(np.float32)


def frequency_axes(mrope_section: list[int]) -> np.ndarray:
    """(sum(mrope_section),) int32: which position axis drives each frequency (section i uses axis i % 3)."""
    return np.concatenate([np.full(n, i % 3, np.int32) for i, n in enumerate(mrope_section)])


class MultimodalRotaryEmbedding(nn.Cell):
    """Position ids (3, B, L) -> cos, sin (B, L, rotary_dim) in the rotate-half layout (halves equal)."""

    def __init__(self, rotary_dim: int, theta: float, mrope_section: list[int], dtype: ms.Type = ms.float32):
        super().__init__()
        if 2 * sum(mrope_section) != rotary_dim:
            raise ValueError(f"mrope_section {mrope_section} must sum to rotary_dim/2 = {rotary_dim // 2}")
        self.dtype = dtype
        self.inv_freq = ms.Tensor(rotary_inv_freq(rotary_dim, theta))
        self.axes = ms.Tensor(frequency_axes(mrope_section))

    def construct(self, position_ids):
        pos = ops.gather(position_ids, self.axes, 0)                      # (F, B, L)
        freqs = pos.transpose(1, 2, 0).astype(ms.float32) * self.inv_freq  # (B, L, F)
        emb = ops.cat((freqs, freqs), -1)
        return ops.cos(emb).astype(self.dtype), ops.sin(emb).astype(self.dtype)
