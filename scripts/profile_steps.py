"""Kernels per AR decode step and per denoising step, from MindSpore's CPU profiler.

On a small model the time of a step is mostly the runtime's fixed cost per kernel, not arithmetic, so the
number of kernels a step launches is the figure that says what a graph change did. One warm generation runs
under ``mindspore.Profiler``; a kernel belongs to the decode step if it ran once per decode step (the prefill
samples token 0, so ``tokens - 1`` times), to the denoising step if it ran once per step. Kernel time is the
profiler's; wall time per step is the pipeline's own timing of that run (the profiler adds its overhead).

    .venv/bin/python scripts/profile_steps.py --out steps.json   # a fresh make-tiny model, 256 x 256
    .venv/bin/python scripts/profile_steps.py --model DIR --height 512 --width 512
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 'A cat holding a sign that says "hello"'


def kernel_rows(out_dir: Path) -> list[dict]:
    """The profiler's per-kernel table (``cpu_op_detail_info_0.csv``) of the run in ``out_dir``."""
    tables = sorted(out_dir.rglob("cpu_op_detail_info_0.csv"))
    if not tables:
        raise SystemExit(f"the profiler wrote no cpu_op_detail_info_0.csv under {out_dir}")
    with tables[-1].open() as f:
        return list(csv.DictReader(f))


def per_step(rows: list[dict], steps: int, wall_s: float) -> dict:
    """Kernels that ran exactly ``steps`` times: count, kernel time per step, and per kernel type its count and
    milliseconds per step (most time first)."""
    mine = [r for r in rows if int(r["op_occurrences"]) == steps]
    types: dict[str, list] = {}
    for r in mine:
        count_ms = types.setdefault(r["op_type"], [0, 0.0])
        count_ms[0] += 1
        count_ms[1] += float(r["op_total_time(ms)"]) / steps
    kernel_ms = sum(ms for _, ms in types.values())
    return {"steps": steps, "kernels_per_step": len(mine), "kernel_ms_per_step": round(kernel_ms, 3),
            "wall_ms_per_step": round(1000 * wall_s / steps, 3),
            "kernel_types": {t: {"count": n, "ms": round(ms, 3)}
                             for t, (n, ms) in sorted(types.items(), key=lambda kv: -kv[1][1])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: a fresh make-tiny model)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=7, help="denoising steps (a count no other kernel repeats)")
    parser.add_argument("--out", default=None, help="also write the report to this JSON file (the profiler prints "
                                                    "its own progress on stdout)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from mindglm_image.runtime import setup_runtime

    setup_runtime("CPU")
    from mindspore import Profiler

    from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
    from mindglm_image.tiny_model import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_tiny_model(Path(tmp) / "tiny", progress=False)
        pipe = GlmImagePipeline.from_pretrained(model)
        run = lambda: pipe(PROMPT, height=args.height, width=args.width, num_inference_steps=args.steps,  # noqa: E731
                           seed=0, progress=False)
        run()  # compile every graph before profiling
        profiler = Profiler(output_path=str(Path(tmp) / "profile"))
        result = run()
        profiler.analyse()
        rows = kernel_rows(Path(tmp) / "profile")
    timings = result.timings
    decode_steps = timings.ar_tokens - 1
    report = {"model": str(args.model or "make-tiny"), "size": f"{args.height}x{args.width}",
              "decode": per_step(rows, decode_steps, timings.ar_seconds * decode_steps / timings.ar_tokens),
              "denoise": per_step(rows, timings.steps, timings.denoise_seconds)}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
