"""Reference-image key/value cache of the DiT (image-to-image).

The reference pipeline switches one cache object between three modes; here each mode is an explicit call
so every compiled graph stays static:

* write: ``cache.write(latents, prior_ids, image_size)`` runs one reference image (batch 1, no text,
  timestep 0, crop 0) through ``GlmImageKVWriter`` and appends every block's keys/values to the current
  batch sample's entry (several images of one sample are concatenated along the sequence in call order);
  ``cache.next_sample()`` moves on to the next batch sample.
* read: ``model(*inputs, *cache.read_inputs(batch))``: each block attends over [cached, own] keys/values.
* skip: ``model(*inputs)`` (the unconditional pass ignores the cache).
* batched CFG: ``model(*inputs, *cache.read_inputs_guided(batch))`` over [cond | uncond] rows: the conditional
  rows read the cache, the unconditional rows get it masked off (``cache_bias``), as if skipped.

Cached tensors stay MindSpore tensors (device memory on Ascend); ``read_inputs`` builds the batched
(L, B, Lc, heads, head_dim) pair once per batch size and reuses it for every denoising step.
"""
from __future__ import annotations

import numpy as np
from mindspore import Tensor, mint, nn

from ...ops.attention import MASKED
from .transformer import GlmImageTransformer2DModel, transformer_inputs


class GlmImageKVWriter(nn.Cell):
    """The write pass as its own graph, sharing the model's parameters (no name prefix is added)."""

    def __init__(self, model: GlmImageTransformer2DModel):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, hidden_states, prior_token_id, prior_token_drop, timestep, target_size, crop_coords,
                  rope_cos, rope_sin):
        """(sample, keys, values); keys/values (L, 1, S, heads, head_dim) for the S image tokens."""
        return self.model.forward_with_kv(hidden_states, None, prior_token_id, prior_token_drop, timestep,
                                          target_size, crop_coords, rope_cos, rope_sin, None, None)


class GlmImageKVCache:
    """Per batch sample, the keys/values of all its reference images, for every block."""

    def __init__(self, model: GlmImageTransformer2DModel):
        self.config = model.config
        self.writer = GlmImageKVWriter(model)
        self.keys: list[Tensor] = []    # per sample: (L, 1, Lc, heads, head_dim)
        self.values: list[Tensor] = []
        self.sample = 0
        self._batched: dict[int, tuple[Tensor, Tensor]] = {}

    def write(self, latents, prior_token_id, image_size: tuple[int, int]) -> Tensor:
        """Run one reference image and store its keys/values; returns the pass's own output (unused by the
        pipeline). ``latents`` (1, C, h, w) normalised VAE latents, ``prior_token_id`` (1, h/p * w/p)
        upsampled ids, ``image_size`` the reference image's pixel (height, width)."""
        if latents.shape[0] != 1:
            raise ValueError(f"write one reference image at a time (batch 1), got batch {latents.shape[0]}")
        ids = prior_token_id.reshape(1, -1)
        drop = np.zeros(tuple(ids.shape), dtype=bool)
        inputs = transformer_inputs(self.config, latents, None, ids, drop, Tensor([0.0]),
                                    Tensor([[float(image_size[0]), float(image_size[1])]]), Tensor([[0.0, 0.0]]))
        latents, _, ids, drop, step, size, crop, cos, sin, _ = inputs
        sample, keys, values = self.writer(latents, ids, drop, step, size, crop, cos, sin)
        if len(self.keys) <= self.sample:
            self.keys.append(keys)
            self.values.append(values)
        else:
            self.keys[self.sample] = mint.cat((self.keys[self.sample], keys), 2)
            self.values[self.sample] = mint.cat((self.values[self.sample], values), 2)
        self._batched.clear()
        return sample

    def next_sample(self) -> None:
        """Later writes go to the next batch sample (call after all of one sample's reference images)."""
        self.sample += 1

    def clear(self) -> None:
        self.keys, self.values, self.sample = [], [], 0
        self._batched.clear()

    def __len__(self) -> int:
        return len(self.keys)

    def read_inputs(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """(cache_key, cache_value), each (L, batch_size, Lc, heads, head_dim), for a read-mode call.

        One cached sample is shared by the whole batch; otherwise each cached sample serves
        batch_size / len(cache) consecutive batch rows (e.g. num_images_per_prompt copies).
        """
        if not self.keys:
            raise ValueError("the KV cache is empty: write the reference images before a read pass "
                             "(or call the model without cache tensors)")
        if batch_size % len(self.keys):
            raise ValueError(f"cannot match {len(self.keys)} cached samples to batch size {batch_size}: "
                             "the batch must be a multiple of the number of cached samples")
        lengths = {int(k.shape[2]) for k in self.keys}
        if len(lengths) > 1:
            raise ValueError(f"cached samples have different reference token counts {sorted(lengths)}; "
                             "every batch sample needs reference images of the same total size")
        if batch_size not in self._batched:
            repeat = batch_size // len(self.keys)
            self._batched[batch_size] = tuple(
                mint.cat([t.broadcast_to((t.shape[0], repeat) + tuple(t.shape[2:])) for t in cached], 1)
                for cached in (self.keys, self.values))
        return self._batched[batch_size]

    def read_inputs_guided(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        """(cache_key, cache_value, cache_bias) for one CFG call over ``2 * batch_size`` rows: rows
        [0, batch_size) (conditional) read the cache as ``read_inputs(batch_size)`` serves it, rows
        [batch_size, 2 * batch_size) (unconditional) get the same keys with a ``MASKED`` bias, so they attend
        only their own keys: exactly zero weight on the cache, as a call without it. The doubled tensors are
        built per call (the loop's duration), not kept."""
        key, value = self.read_inputs(batch_size)
        bias = np.zeros((2 * batch_size, key.shape[2]), np.float32)
        bias[batch_size:] = MASKED
        return mint.cat((key, key), 1), mint.cat((value, value), 1), Tensor(bias)
