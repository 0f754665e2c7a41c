"""Reference fixture for the optimizer: torch.optim.AdamW with clip_grad_norm_, a warmup+cosine LR and an EMA.

Five steps on four random tensors with fixed random gradients; steps 2 and 4 get gradients large enough
to be clipped. Saves the initial weights, every step's gradients and LR, and the final weights, moments
and EMA.
"""
import math

import torch
from common import out_dir, save_arrays, seed_all

STEPS, LR, BETAS, EPS, WD, EMA, MAX_NORM, WARMUP, MIN_RATIO = 5, 1e-2, (0.9, 0.95), 1e-8, 0.1, 0.9, 1.0, 2, 0.1


def lr_at(step: int) -> float:
    """Linear warmup for WARMUP steps, then cosine to MIN_RATIO * LR at step STEPS (written out here)."""
    if step <= WARMUP:
        return LR * step / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return LR * (MIN_RATIO + (1 - MIN_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    out = out_dir()
    seed_all(0)
    shapes = [(6, 5), (5,), (3, 4, 2), (7,)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    arrays = {f"init_{i}": p.detach().clone() for i, p in enumerate(params)}
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    for step in range(1, STEPS + 1):
        scale = 10.0 if step in (2, 4) else 0.05
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape) * scale
            arrays[f"grad_{step}_{i}"] = p.grad.clone()
        arrays[f"norm_{step}"] = torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
        arrays[f"lr_{step}"] = torch.tensor(lr_at(step), dtype=torch.float64)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(EMA).add_(p, alpha=1 - EMA)
    for i, p in enumerate(params):
        state = opt.state[p]
        arrays.update({f"final_{i}": p, f"exp_avg_{i}": state["exp_avg"], f"exp_avg_sq_{i}": state["exp_avg_sq"],
                       f"ema_{i}": ema[i]})
    save_arrays(out / "adamw_ema.npz", **arrays)


if __name__ == "__main__":
    main()
