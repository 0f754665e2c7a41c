"""Autoregressive generation of the prior image tokens with the static-shape KV cache.

Mirrors what GlmImagePipeline asks of ``generate``: the prompt (reference-image placeholders replaced by
their VQ ids) is prefilled once, then one token per step is sampled and fed back at its 3-D grid
position (T2I: the preview grid, then the full grid, then the end marker; I2I: the full grid). The
full grid's ids are cut out and upsampled 2x for the DiT.

Sampling runs inside the decode graph by default (``DeviceTokenSampler``): tokens, the end-marker
bookkeeping and the non-finite flags stay on the device, and the host reads back only the (3,) flags
every ``check_every`` steps (to stop early when every row has ended or a logit is not finite) and the
tokens with the flags once at the end: ``floor((N - 1) / check_every) + 1`` readbacks for N tokens (6 for
the 1281 tokens of a 1024 x 1024 T2I image at the default 256; 1 with ``check_every=0``), against N
with the numpy sampler. ``PriorTokens.host_syncs`` counts them.

Inside the preview and full grids only image ids are sampled (``grid_ids_only``): the reference's
``generate`` lets the model draw a grid marker or the end marker there, which leaves a grid with a
non-image id that the DiT cannot embed. The restriction changes nothing while the model's own choice is
an image id (greedy tokens stay the reference's); the token after the last grid is unrestricted.

Graphs are compiled once per shape and reused: decode sessions are kept per (batch, cache length) and
prompts are left-padded to a multiple of ``prompt_bucket`` so the prefill graph is shared across prompts.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from mindspore import ops
from tqdm import tqdm

from ..finite import check_finite, non_finite_error
from ..graph_inputs import bucketed
from ..models.ar.glm_image_ar import GlmImageForConditionalGeneration
from ..models.ar.rope import RopePositions
from ..models.dit.prior_tokens import upsample_prior_tokens
from ..processor.prompt import PromptBatch
from .decode_session import DecodeSession
from .device_sampling import sampling_params
from .sampling import TokenSampler


@dataclasses.dataclass(frozen=True)
class PriorGenerationConfig:
    prompt_bucket: int = 64       # prompts are left-padded to a multiple of this (0: no padding)
    cache_bucket: int = 256       # cache length rounded up to a multiple of this, so sessions are reused
    device_sampling: bool = True  # sample inside the decode graph (False: numpy TokenSampler, a readback per token)
    check_every: int = 256        # device sampling: steps between readbacks of the end/non-finite flags (0: none)
    grid_ids_only: bool = True    # inside the grids sample only image ids (< codebook size); False: any id, as the
                                  # reference's generate (a marker drawn inside the grid then fails the call)

    def __post_init__(self):
        if self.check_every < 0:
            raise ValueError(f"check_every must be >= 0 (0: read the flags only at the end), got {self.check_every}")


@dataclasses.dataclass
class PriorTokens:
    generated: np.ndarray     # (B, N) every sampled token, end marker included
    grid_ids: np.ndarray      # (B, h*w) full-grid ids at the AR resolution (32 px per token)
    prior_ids: np.ndarray     # (B, 2h*2w) the same, upsampled to the DiT's patch grid
    host_syncs: int = 0       # device-to-host readbacks of the AR stage in this call (shared by its B rows)


class PriorGenerator:
    """Runs prompt batches through one AR model, reusing compiled graphs between calls."""

    def __init__(self, model: GlmImageForConditionalGeneration, cfg: PriorGenerationConfig = PriorGenerationConfig()):
        self.model = model
        self.cfg = cfg
        self._sessions: dict[tuple[int, int], DecodeSession] = {}

    def _session(self, batch: int, needed: int) -> DecodeSession:
        length = bucketed(needed, self.cfg.cache_bucket)
        key = (batch, length)
        if key not in self._sessions:
            self._sessions[key] = DecodeSession(self.model, self.model.new_kv_cache(batch, length),
                                                self.model.config.image_end_token_id)
        session = self._sessions[key]
        session.reset()
        return session

    def _pad_prompt(self, batch: PromptBatch, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = batch.input_ids, batch.attention_mask
        bucket = self.cfg.prompt_bucket
        extra = (-ids.shape[1]) % bucket if bucket else 0
        if extra:
            ids = np.concatenate([np.full((ids.shape[0], extra), pad_id, ids.dtype), ids], axis=1)
            mask = np.concatenate([np.zeros((mask.shape[0], extra), mask.dtype), mask], axis=1)
        return ids, mask

    def __call__(self, batch: PromptBatch, sampler: TokenSampler, reference_ids: np.ndarray | None = None,
                 pad_id: int = 0, progress: bool = True) -> PriorTokens:
        """Generate the target grid(s) of every prompt in ``batch``.

        ``reference_ids`` are the VQ ids of all reference images in prompt order (I2I), written over the
        image placeholder tokens; ``pad_id`` fills the left padding added for graph reuse.
        """
        config = self.model.config
        ids, mask = self._pad_prompt(batch, pad_id)
        placeholders = ids == config.image_token_id
        if reference_ids is not None or placeholders.any():
            count = 0 if reference_ids is None else len(reference_ids)
            if placeholders.sum() != count:
                raise ValueError(f"the prompts hold {int(placeholders.sum())} image placeholder tokens but "
                                 f"{count} reference-image ids were given; encode every reference image")
            ids = ids.copy()
            ids[placeholders] = reference_ids
        t2i = not placeholders.any()  # no reference image: the preview grid is generated first
        h, w = batch.grid.height, batch.grid.width
        new_tokens = h * w + (batch.grid.preview_height * batch.grid.preview_width if t2i else 0) + 1
        offset = batch.grid.preview_height * batch.grid.preview_width if t2i else 0
        positions = self.model.rope_positions(ids, batch.image_grid_thw, batch.images_per_sample, mask)
        session = self._session(len(ids), ids.shape[1] + new_tokens)
        limits = np.full(new_tokens, config.text_config.vision_vocab_size, np.int32)
        if self.cfg.grid_ids_only:
            limits[:-1] = config.vq_config.num_embeddings  # every grid token; the last one (the end marker) is free
        run = self._sample_on_device if self.cfg.device_sampling else self._sample_on_host
        generated, syncs = run(session, sampler, ids, mask, positions, limits, progress)
        grid_ids = generated[:, offset:offset + h * w]
        if (grid_ids >= config.vq_config.num_embeddings).any():
            raise RuntimeError("the AR model ended or broke the image grid early (non-image ids inside the grid); "
                               "retry with another seed or check that the checkpoint matches its config")
        prior = np.stack([upsample_prior_tokens(row, h, w).reshape(-1) for row in grid_ids])
        return PriorTokens(generated, grid_ids, prior, syncs)

    def _sample_on_device(self, session: DecodeSession, sampler: TokenSampler, ids: np.ndarray, mask: np.ndarray,
                          positions: RopePositions, limits: np.ndarray, progress: bool) -> tuple[np.ndarray, int]:
        """(B, N) tokens sampled in the decode graph (token k among the ids below ``limits[k]``), and the
        number of readbacks it took."""
        new_tokens = len(limits)
        logits_per_step = len(ids) * self.model.config.text_config.vision_vocab_size
        state = session.sample_prefill(ids, positions.prefill, mask, positions.decode,
                                       sampler.uniforms(len(ids), new_tokens), sampling_params(sampler.config), limits)
        syncs, steps = 0, 1
        with tqdm(total=new_tokens, desc="AR tokens", disable=not progress) as bar:
            bar.update(1)
            while steps < new_tokens:
                if self.cfg.check_every and steps % self.cfg.check_every == 0:
                    syncs += 1
                    if self._all_ended(state.flags.asnumpy(), logits_per_step):
                        break
                state = session.sample_step(state)
                steps += 1
                bar.update(1)
        flat = ops.cat((state.flags, state.tokens.reshape(-1))).asnumpy()  # the flags and tokens in one readback
        self._all_ended(flat[:3], logits_per_step)
        generated = np.full((len(ids), new_tokens), session.end_token_id, np.int64)
        generated[:, :steps] = flat[3:].reshape(len(ids), new_tokens)[:, :steps]
        return generated, syncs + 1

    @staticmethod
    def _all_ended(flags: np.ndarray, logits_per_step: int) -> bool:
        """Raise for non-finite logits counted in the graph (``_SampledStep.select``); True when every row ended."""
        if flags[0]:
            raise non_finite_error(f"AR prior (token {flags[0]} logits)", int(flags[1]), logits_per_step)
        return bool(flags[2])

    def _sample_on_host(self, session: DecodeSession, sampler: TokenSampler, ids: np.ndarray, mask: np.ndarray,
                        positions: RopePositions, limits: np.ndarray, progress: bool) -> tuple[np.ndarray, int]:
        """The numpy twin: logits read back and sampled by ``sampler`` at every step."""
        new_tokens = len(limits)
        eos = self.model.config.image_end_token_id
        logits = session.prefill(ids, positions.prefill, mask)
        generated = np.zeros((len(ids), new_tokens), dtype=np.int64)
        finished = np.zeros(len(ids), dtype=bool)
        for k in tqdm(range(new_tokens), desc="AR tokens", disable=not progress):
            token = sampler(check_finite(logits, f"AR prior (token {k + 1} logits)"), int(limits[k]))
            token = np.where(finished, eos, token)   # a finished sample keeps emitting its end marker
            generated[:, k] = token
            finished |= token == eos
            if finished.all() or k == new_tokens - 1:
                generated[:, k + 1:] = eos
                return generated, k + 1
            logits = session.step(token[:, None], positions.decode_step(k))
