"""Reference fixture for the AR text decoder: a tiny random GlmImageForConditionalGeneration.

Saves the model (several shards), then for fixed prompts: get_rope_index positions and the cached
decode positions (I2I with one and two reference images, T2I, a left-padded batch of two), full-forward
logits, and logits of an incremental generation through the model's own cache and decode positions.
"""
from __future__ import annotations

import numpy as np
import torch
from common import out_dir, save_arrays, seed_all
from transformers import GlmImageConfig, GlmImageForConditionalGeneration

START, END, PAD = 184, 185, 299          # image start/end markers inside the vision ids; text pad id
TEXT_IDS = (186, 299)                     # plain text tokens
VISION_IDS = (0, 184)                     # image token ids the head can produce
DECODE_STEPS = 5

CONFIG = dict(
    text_config=dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, pad_token_id=PAD, vision_vocab_size=200,
                     eos_token_id=END, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                        "mrope_section": [1, 1, 2], "partial_rotary_factor": 0.5}),
    vision_config=dict(depth=1, hidden_size=32, num_heads=2, intermediate_size=64, image_size=64, patch_size=16),
    vq_config=dict(embed_dim=16, num_embeddings=32, latent_channels=32),
    image_token_id=290, image_start_token_id=START, image_end_token_id=END,
)


def text(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(*TEXT_IDS, n).tolist()


def image(rng: np.random.Generator, h: int, w: int) -> list[int]:
    return [START] + rng.integers(*VISION_IDS, h * w).tolist() + [END]


def prompts(rng: np.random.Generator) -> dict[str, tuple[list[int], list[list[int]]]]:
    """name -> (token ids, image_grid_thw): reference images first, then the target grids."""
    return {
        "i2i1": (text(rng, 5) + image(rng, 2, 3) + text(rng, 4) + [START], [[1, 2, 3], [1, 3, 4]]),
        "i2i2": (text(rng, 3) + image(rng, 2, 2) + text(rng, 2) + image(rng, 3, 2) + text(rng, 3) + [START],
                 [[1, 2, 2], [1, 3, 2], [1, 2, 4]]),
        "t2i": (text(rng, 9) + [START], [[1, 4, 4], [1, 2, 2]]),
    }


def randomize(model: torch.nn.Module) -> None:
    """Non-trivial values everywhere (norm weights too, so a swapped norm cannot pass)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))


def incremental(model, ids, mask, grids, per_sample, tokens) -> np.ndarray:
    """Prefill then one token per step through the reference's own cache and decode positions: (1+S, B, V)."""
    out = model(input_ids=ids, attention_mask=mask, image_grid_thw=grids, images_per_sample=per_sample,
                use_cache=True)
    logits, past = [out.logits[:, -1]], out.past_key_values
    for k in range(tokens.shape[1]):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = model(input_ids=tokens[:, k:k + 1], attention_mask=mask, past_key_values=past, use_cache=True)
        logits.append(out.logits[:, -1])
        past = out.past_key_values
    return torch.stack(logits).numpy()


def main() -> None:
    out = out_dir()
    seed_all(0)
    rng = np.random.default_rng(0)
    model = GlmImageForConditionalGeneration(GlmImageConfig(**CONFIG)).eval()
    randomize(model)
    model.save_pretrained(out / "vision_language_encoder", max_shard_size="50KB")
    arrays: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for name, (ids, grids) in prompts(rng).items():
            ids_t, grids_t = torch.tensor([ids]), torch.tensor(grids)
            pos, _ = model.model.get_rope_index(ids_t, image_grid_thw=grids_t)
            arrays.update({f"{name}_ids": ids_t, f"{name}_grids": grids_t, f"{name}_prefill": pos,
                           f"{name}_decode": model.model._cached_decode_position_ids,
                           f"{name}_logits": model(input_ids=ids_t, position_ids=pos).logits})
            if name == "t2i":
                tokens = torch.tensor(rng.integers(*VISION_IDS, (1, DECODE_STEPS)))
                decode = model.model._cached_decode_position_ids[:, :, :DECODE_STEPS].permute(1, 0, 2)
                whole = torch.cat([ids_t, tokens], 1)
                arrays["t2i_tokens"] = tokens
                arrays["t2i_whole_logits"] = model(input_ids=whole, position_ids=torch.cat([pos, decode], 2)).logits
                arrays["t2i_inc_logits"] = incremental(model, ids_t, torch.ones_like(ids_t), grids_t, None, tokens)

        # Batch of two, left-padded: an I2I prompt (one reference image) beside a longer T2I prompt.
        first, first_grids = text(rng, 2) + image(rng, 2, 2) + text(rng, 2) + [START], [[1, 2, 2], [1, 3, 3]]
        second, second_grids = text(rng, 14) + [START], [[1, 4, 4], [1, 2, 2]]
        length = max(len(first), len(second))
        ids_t = torch.tensor([[PAD] * (length - len(s)) + s for s in (first, second)])
        mask = torch.tensor([[0] * (length - len(s)) + [1] * len(s) for s in (first, second)])
        grids_t, per_sample = torch.tensor(first_grids + second_grids), torch.tensor([2, 2])
        pos, _ = model.model.get_rope_index(ids_t, image_grid_thw=grids_t, images_per_sample=per_sample,
                                            attention_mask=mask)
        tokens = torch.tensor(rng.integers(*VISION_IDS, (2, DECODE_STEPS)))
        arrays.update({"batch_ids": ids_t, "batch_mask": mask, "batch_grids": grids_t, "batch_per_sample": per_sample,
                       "batch_prefill": pos, "batch_decode": model.model._cached_decode_position_ids,
                       "batch_logits": model(input_ids=ids_t, attention_mask=mask, position_ids=pos).logits,
                       "batch_tokens": tokens,
                       "batch_inc_logits": incremental(model, ids_t, mask, grids_t, per_sample, tokens)})
    save_arrays(out / "ar_text.npz", **arrays)


if __name__ == "__main__":
    main()
