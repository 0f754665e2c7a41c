"""Reference fixture for the AR SFT loss: masked next-token cross-entropy written in torch on a tiny
random GlmImageForConditionalGeneration, and every parameter's gradient from torch autograd.

Two teacher-forced sequences, right-padded into one batch: a T2I prompt followed by the preview grid,
the full grid and the end marker, and an I2I prompt (one reference image) followed by the full grid
and the end marker. Positions: the reference's get_rope_index on the prompt, then its cached decode
positions for the generated tokens (what generation feeds them at).
"""
# fixture-depends: tests/reference/ar_text.py
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from ar_text import CONFIG, END, PAD, VISION_IDS, prompts, randomize
from common import out_dir, save_arrays, seed_all
from peft import LoraConfig, get_peft_model
from transformers import GlmImageConfig, GlmImageForConditionalGeneration

IGNORE = -100


def sequence(model, rng, ids: list[int], grids: list[list[int]], generated: int):
    """Prompt + ``generated`` new tokens (random image ids, then the end marker), labels and positions."""
    new = rng.integers(*VISION_IDS, generated - 1).tolist() + [END]
    prompt = torch.tensor([ids])
    pos, _ = model.model.get_rope_index(prompt, image_grid_thw=torch.tensor(grids))
    decode = model.model._cached_decode_position_ids[:, :, :generated].permute(1, 0, 2)
    return (ids + new, [IGNORE] * len(ids) + new, torch.cat([pos, decode], 2)[:, 0], grids)


def main() -> None:
    out = out_dir()
    seed_all(0)
    rng = np.random.default_rng(1)
    model = GlmImageForConditionalGeneration(GlmImageConfig(**CONFIG))
    randomize(model)
    model.save_pretrained(out / "vision_language_encoder", max_shard_size="50KB")
    cases = prompts(rng)
    t2i_ids, t2i_grids = cases["t2i"]          # grids: full 4x4, preview 2x2
    i2i_ids, i2i_grids = cases["i2i1"]         # grids: reference 2x3, target 3x4
    samples = [sequence(model, rng, t2i_ids, t2i_grids, 2 * 2 + 4 * 4 + 1),
               sequence(model, rng, i2i_ids, i2i_grids, 3 * 4 + 1)]
    length = max(len(s[0]) for s in samples) + 2  # both padded
    ids = torch.full((2, length), PAD)
    labels = torch.full((2, length), IGNORE)
    mask = torch.zeros((2, length), dtype=torch.long)
    positions = torch.ones((3, 2, length), dtype=torch.long)
    arrays = {}
    for b, (seq, lab, pos, grids) in enumerate(samples):
        n = len(seq)
        ids[b, :n], labels[b, :n], mask[b, :n], positions[:, b, :n] = torch.tensor(seq), torch.tensor(lab), 1, pos
        arrays.update({f"sample{b}_ids": torch.tensor(seq), f"sample{b}_labels": torch.tensor(lab),
                       f"sample{b}_grids": torch.tensor(grids)})

    def sft_loss(m) -> torch.Tensor:
        logits = m(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)

    model.train()
    loss = sft_loss(model)
    loss.backward()
    grads = {f"grad:{name}": p.grad for name, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn_like(p))
    lora.save_pretrained(out / "ar_lora")
    lora_loss = sft_loss(lora)
    lora_loss.backward()
    prefix, suffix = "base_model.model.", ".default.weight"
    lora_grads = {f"lora_grad:{name[len(prefix):-len(suffix)]}": p.grad for name, p in lora.named_parameters()
                  if "lora_" in name}
    save_arrays(out / "ar_sft.npz", ids=ids, labels=labels, mask=mask, positions=positions, loss=loss,
                lora_loss=lora_loss, **arrays, **grads, **lora_grads)


if __name__ == "__main__":
    main()
