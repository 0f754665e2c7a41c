"""Supervised fine-tuning loss of the AR generator: next-token cross-entropy on the image tokens.

One training sequence is what the generator produces, teacher-forced: the chat-templated prompt (with
reference-image VQ ids in I2I prompts), then the generated tokens (T2I: preview grid, full grid, end
marker; I2I: full grid, end marker). ``labels`` equal the ids on generated tokens and -100 on the prompt
(and padding); the logits at slot t are scored against the label at slot t + 1. Positions are the 3-D
rope positions the generator uses: the prompt's prefill positions, then the decode positions of the
generated tokens (``models/ar/rope.py``), so training sees exactly the positions of inference.
"""
from __future__ import annotations

from collections.abc import Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn, ops

from ..config.ar import GlmImageConfig
from ..graph_inputs import bucketed, graph_input
from ..models.ar.glm_image_ar import GlmImageForConditionalGeneration
from ..models.ar.rope import compute_rope_positions

IGNORE_INDEX = -100


def sequence_positions(input_ids: np.ndarray, labels: np.ndarray, image_grid_thw: np.ndarray,
                       config: GlmImageConfig) -> np.ndarray:
    """(3, L) positions of one unpadded training sequence, as the generator assigns them.

    The prompt is everything before the first labelled token; the rest takes the decode positions the
    generator would feed those tokens at.
    """
    ids, labels = np.asarray(input_ids), np.asarray(labels)
    labelled = np.flatnonzero(labels != IGNORE_INDEX)
    if ids.ndim != 1 or labels.shape != ids.shape:
        raise ValueError(f"ar_input_ids {ids.shape} and ar_labels {labels.shape} must be 1-D of the same length")
    if not len(labelled):
        raise ValueError("ar_labels has no labelled token: nothing to learn from this sample")
    prompt_len = int(labelled[0])
    if prompt_len == 0 or not np.array_equal(labels[prompt_len:], ids[prompt_len:]):
        raise ValueError("ar_labels must be -100 on the prompt and equal ar_input_ids on every generated token after it")
    pos = compute_rope_positions(ids[None, :prompt_len], config.image_start_token_id, config.image_end_token_id,
                                 image_grid_thw)
    generated = len(ids) - prompt_len
    if pos.decode is None or pos.decode.shape[2] < generated:
        planned = 0 if pos.decode is None else pos.decode.shape[2]
        raise ValueError(f"the sample has {generated} generated tokens but its image grids plan {planned}; "
                         "ar_image_grid_thw must list the reference grids, then the target grids")
    return np.concatenate([pos.prefill[:, 0], pos.decode[0, :, :generated]], axis=1)


def collate_ar(samples: Sequence[dict], config: GlmImageConfig, pad_id: int = 0, length: int | None = None,
               multiple: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batch prepared samples (``ar_input_ids``, ``ar_labels``, ``ar_image_grid_thw``) into the loss
    inputs (input_ids, position_ids (3, B, L), attention_mask, labels), right-padded to ``length``
    (default: the longest sample rounded up to a multiple of ``multiple``); padding is masked out of
    attention and loss."""
    longest = max(len(s["ar_input_ids"]) for s in samples)
    length = length or bucketed(longest, multiple)
    if length < longest:
        raise ValueError(f"length={length} is shorter than the longest sample ({longest} tokens)")
    batch = len(samples)
    ids = np.full((batch, length), pad_id, np.int64)
    labels = np.full((batch, length), IGNORE_INDEX, np.int64)
    mask = np.zeros((batch, length), np.int64)
    positions = np.ones((3, batch, length), np.int64)
    for b, s in enumerate(samples):
        n = len(s["ar_input_ids"])
        ids[b, :n], labels[b, :n], mask[b, :n] = s["ar_input_ids"], s["ar_labels"], 1
        positions[:, b, :n] = sequence_positions(s["ar_input_ids"], s["ar_labels"], s["ar_image_grid_thw"], config)
    shape = (batch, length)
    return (graph_input("input_ids", ids, ms.int32, shape),
            graph_input("position_ids", positions, ms.int32, (3, *shape)),
            graph_input("attention_mask", mask, ms.int32, shape), graph_input("labels", labels, ms.int32, shape))


class ARSFTLoss(nn.Cell):
    """``construct(input_ids, position_ids, attention_mask, labels)`` -> mean next-token CE (fp32 scalar)
    over the labelled tokens of the batch (the logits at slot t predict the label at t + 1)."""

    def __init__(self, model: GlmImageForConditionalGeneration):
        super().__init__()
        self.model = model

    def construct(self, input_ids, position_ids, attention_mask, labels):
        logits = self.model(input_ids, position_ids, attention_mask)[:, :-1].astype(ms.float32)
        target = labels[:, 1:]
        valid = target != IGNORE_INDEX
        log_probs = ops.log_softmax(logits, -1)
        picked = mint.gather(log_probs, -1, ops.where(valid, target, mint.zeros_like(target)).unsqueeze(-1)).squeeze(-1)
        count = mint.clamp(valid.astype(ms.float32).sum(), min=1.0)
        return -(picked * valid.astype(ms.float32)).sum() / count


def ar_trainable_parameters(model: GlmImageForConditionalGeneration) -> list[ms.Parameter]:
    """Parameters a full AR SFT trains: the text decoder and the head (the vision encoder and VQ
    tokenizer only turn reference images into ids before the loss, so they get no gradient)."""
    return [p for name, p in model.parameters_and_names()
            if name.startswith(("model.language_model.", "lm_head."))]
