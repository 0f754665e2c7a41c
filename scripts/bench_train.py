"""DiT training-step throughput on CPU: our TrainStep against the same step in torch, same model, same run.

For each size (tiny: the test model's widths; mid: hidden 1024), the reference half writes a random
GlmImageTransformer2DModel and times forward + backward + clipping + AdamW + EMA in torch; we load that
folder, time the same step (DiTFlowMatchLoss in TrainStep), and print samples/s of both, their ratio,
and each process's peak RSS.

    .venv/bin/python scripts/bench_train.py --sizes tiny mid --batch 2 --steps 6
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "tiny": dict(patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
                 text_embed_dim=24, time_embed_dim=32, condition_dim=8, prior_vq_quantizer_codebook_size=64),
    "mid": dict(patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=64, num_attention_heads=16,
                text_embed_dim=256, time_embed_dim=512, condition_dim=256, prior_vq_quantizer_codebook_size=16384),
}
LATENT = {"tiny": (8, 8), "mid": (32, 32)}  # latent (h, w): 64x64 and 256x256 pixels
TEXT = 16


def bench_ours(folder: Path, batch: int, height: int, width: int, steps: int) -> dict:
    from mindglm_image.scheduler.flow_match import FlowMatchEulerScheduler, FlowMatchEulerSchedulerConfig
    from mindglm_image.training.config import DiTLossConfig, OptimizerConfig
    from mindglm_image.training.dit_loss import DiTBatchMaker, DiTFlowMatchLoss
    from mindglm_image.training.train_step import TrainStep
    from mindglm_image.weights.components import COMPONENTS, load_component

    model = load_component(COMPONENTS["transformer"], folder / "transformer")
    cfg = model.config
    rng = np.random.default_rng(0)
    samples = [{"latents": rng.standard_normal((cfg.in_channels, height, width)).astype(np.float32),
                "prior_ids": rng.integers(0, cfg.prior_vq_quantizer_codebook_size, (height // 2) * (width // 2)).astype(np.int32),
                "glyph": rng.standard_normal((TEXT, cfg.text_embed_dim)).astype(np.float32),
                "size": np.array([8 * height, 8 * width], np.int32)} for _ in range(batch)]
    maker = DiTBatchMaker(cfg, FlowMatchEulerScheduler(FlowMatchEulerSchedulerConfig(use_dynamic_shifting=True)),
                          DiTLossConfig(prior_drop_prob=0.0, glyph_drop_prob=0.0), np.zeros((1, cfg.text_embed_dim), np.float32))
    inputs = maker(samples, [np.random.default_rng(i) for i in range(batch)])
    step = TrainStep(DiTFlowMatchLoss(model), list(model.get_parameters()), OptimizerConfig(lr=1e-4, weight_decay=0.01))
    times = []
    for i in range(steps):
        start = time.perf_counter()
        step.step([inputs], i + 1, 1e-4)
        times.append(time.perf_counter() - start)
    warm = sorted(times[1:])
    return {"first_s": times[0], "median_s": warm[len(warm) // 2],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed steps (the first, with compilation, reported apart)")
    parser.add_argument("--ref-python", default=os.environ.get("MINDGLM_REF_PYTHON", str(ROOT / ".venv-ref/bin/python")))
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (one cold step, then warm ones)")
    from mindglm_image.runtime import reference_env, setup_runtime

    setup_runtime("CPU")
    report = {}
    for size in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-train-{size}-"))
        h, w = LATENT[size]
        proc = subprocess.run([args.ref_python, str(ROOT / "scripts/reference/bench_train_ref.py"), str(folder),
                               json.dumps(SIZES[size]), str(args.batch), str(h), str(w), str(TEXT), str(args.steps)],
                              capture_output=True, text=True, env=reference_env())
        if proc.returncode:
            sys.exit(f"reference benchmark failed:\n{proc.stderr[-3000:]}")
        ref = json.loads(proc.stdout.strip().splitlines()[-1])
        ours = bench_ours(folder, args.batch, h, w, args.steps)
        hidden = SIZES[size]["num_attention_heads"] * SIZES[size]["attention_head_dim"]
        report[size] = {"hidden": hidden, "layers": SIZES[size]["num_layers"], "batch": args.batch,
                        "latent": f"{h}x{w}",
                        "ours_samples_per_s": round(args.batch / ours["median_s"], 2),
                        "torch_samples_per_s": round(args.batch / ref["median_s"], 2),
                        "speed_ratio_ours_over_torch": round(ref["median_s"] / ours["median_s"], 2),
                        "ours_first_step_s (compile)": round(ours["first_s"], 1),
                        "ours_peak_rss_gb (process so far)": round(ours["peak_rss_gb"], 2),
                        "torch_peak_rss_gb": round(ref["peak_rss_gb"], 2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"benchmark wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)
