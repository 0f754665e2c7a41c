"""Prompt(s) -> glyph embeddings for the DiT: the quoted spans encoded by the Glyph-byT5 T5 encoder.

Per prompt, as the reference pipeline: the spans (or [""] when there are none) are tokenised with
``</s>``, every span gets one pad id in front when the span count is even, spans are right-padded to
the longest and encoded in one batch with the key mask; the states of the unpadded tokens (the pad
prefix included, it is unmasked) are concatenated in span order. A batch of prompts is then
left-padded with zeros to the longest; the padding mask goes with the embeddings so the DiT can ignore
the padding (the reference attends to it, making an image depend on its batch-mates). The negative
(CFG) branch encodes "" per prompt.
"""
from __future__ import annotations

from typing import NamedTuple

import mindspore as ms
import numpy as np
from mindspore import mint, ops

from ...graph_calls import static_graph
from ...graph_inputs import bucketed, graph_input
from ...processor.byt5_tokenizer import ByT5Tokenizer
from ...processor.glyph_text import extract_glyph_texts
from .t5_encoder import T5EncoderModel


def glyph_token_batch(tokenizer: ByT5Tokenizer, spans: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)``, both int32 (n_spans, L), for one prompt's spans."""
    spans = spans or [""]
    ids = tokenizer(spans, max_length=max_length, truncation=True)["input_ids"]
    prefix = [tokenizer.pad_token_id] * ((len(ids) + 1) % 2)
    ids = [prefix + row for row in ids]
    longest = max(len(row) for row in ids)
    input_ids = np.full((len(ids), longest), tokenizer.pad_token_id, dtype=np.int32)
    mask = np.zeros((len(ids), longest), dtype=np.int32)
    for i, row in enumerate(ids):
        input_ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return input_ids, mask


class PromptEmbeddings(NamedTuple):
    """What the DiT needs from the prompts, each row repeated per image of its prompt."""

    positive: ms.Tensor             # (B, T, d_model), left-padded with zeros
    negative: ms.Tensor | None      # (B, T_neg, d_model) embeddings of "", None without CFG
    mask: np.ndarray | None         # (B, T) bool, False on the padding of ``positive``; None: no padding


class GlyphEncoder:
    """Host-side driver: tokenises, runs the T5 cell once per prompt, gathers and pads the states."""

    def __init__(self, text_encoder: T5EncoderModel, tokenizer: ByT5Tokenizer, max_sequence_length: int = 2048,
                 length_bucket: int = 32):
        if max_sequence_length < 1:
            raise ValueError(f"max_sequence_length={max_sequence_length} must be at least 1")
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.max_sequence_length = max_sequence_length
        self.length_bucket = length_bucket

    def _encode_spans(self, spans: list[str]) -> ms.Tensor:
        input_ids, mask = glyph_token_batch(self.tokenizer, spans, self.max_sequence_length)
        # pad spans to a multiple of length_bucket tokens and their count to a power of two with fully
        # masked entries, so prompts of similar length share one compiled graph (masked keys add exact zeros)
        n, length = input_ids.shape
        rows = 1 << (n - 1).bit_length()
        cols = bucketed(length, self.length_bucket)
        input_ids = np.pad(input_ids, ((0, rows - n), (0, cols - length)), constant_values=self.tokenizer.pad_token_id)
        mask = np.pad(mask, ((0, rows - n), (0, cols - length)))
        n, length = input_ids.shape
        states = static_graph(self.text_encoder)(graph_input("glyph input_ids", input_ids, ms.int32),
                                   graph_input("glyph attention_mask", mask, ms.int32),
                                   self.text_encoder.position_bucket_for(length))
        keep = graph_input("glyph token index", np.flatnonzero(mask.reshape(-1)), ms.int32)
        return ops.gather(states.reshape(n * length, -1), keep, 0)

    def encode(self, prompt: str | list[str]) -> ms.Tensor:
        """(batch, tokens, d_model) in the encoder's dtype; shorter prompts are zero-padded on the left."""
        return self.encode_padded(prompt)[0]

    def encode_padded(self, prompt: str | list[str]) -> tuple[ms.Tensor, np.ndarray | None]:
        """``encode``'s embeddings and their (batch, tokens) bool mask, False on padding (None: none padded)."""
        per_prompt = [self._encode_spans(spans) for spans in extract_glyph_texts(prompt)]
        if not per_prompt:
            raise ValueError("GlyphEncoder.encode: empty prompt list; pass at least one prompt")
        lengths = [e.shape[0] for e in per_prompt]
        longest = max(lengths)
        rows = []
        for emb in per_prompt:
            if emb.shape[0] < longest:
                pad = mint.zeros((longest - emb.shape[0], emb.shape[1]), dtype=emb.dtype)
                emb = mint.cat([pad, emb], dim=0)
            rows.append(emb)
        mask = np.arange(longest)[None, :] >= longest - np.asarray(lengths)[:, None]
        return ops.stack(rows, 0), None if mask.all() else mask

    def encode_prompt(self, prompt: str | list[str], do_classifier_free_guidance: bool = True,
                      num_images_per_prompt: int = 1) -> PromptEmbeddings:
        """Conditional embeddings (with their padding mask) and, for CFG, the embeddings of "" per prompt;
        each repeated per image."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt={num_images_per_prompt} must be at least 1")
        positive, mask = self.encode_padded(prompts)
        negative = self.encode([""] * len(prompts)) if do_classifier_free_guidance else None
        if num_images_per_prompt > 1:
            positive = ops.repeat_interleave(positive, num_images_per_prompt, 0)
            if negative is not None:
                negative = ops.repeat_interleave(negative, num_images_per_prompt, 0)
            if mask is not None:
                mask = np.repeat(mask, num_images_per_prompt, axis=0)
        return PromptEmbeddings(positive, negative, mask)
