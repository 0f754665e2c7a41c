"""Generation speed on CPU: our pipeline against the reference GlmImagePipeline, same model, same run.

Writes the tiny model (``make-tiny``) unless ``--model`` is given, times our AR decoding (tokens/s) and
denoising (s/step, CFG: one batched DiT call per step) cold (first call: graph compilation) and warm (best of
``--repeats``), runs the reference pipeline on the same folder in ``.venv-ref`` and prints the ratios.
It also times our AR stage with the numpy sampler (logits read back every token) against the on-device
sampler (tokens read back once), interleaved, with the host readbacks per image of each
(``--samplers-only``: just that comparison).

    .venv/bin/python scripts/bench_generate.py --height 256 --width 256 --steps 8

``--denoise-only`` times just the CFG denoising loop, ours both ways on the same inputs: the host loop (two DiT
calls a step, numpy Euler step, every velocity read back) against the device loop the pipeline runs (one
batched DiT call a step, Euler step on the device, one readback), with host syncs per image and the largest
difference of their final latents:

    .venv/bin/python scripts/bench_generate.py --denoise-only --height 256 --width 256 --steps 8
    .venv/bin/python scripts/bench_generate.py --samplers-only --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 'A cat holding a sign that says "hello"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: a fresh make-tiny model)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samplers-only", action="store_true", help="only the numpy vs on-device sampler comparison")
    parser.add_argument("--ref-python", default=os.environ.get("MINDGLM_REF_PYTHON", str(ROOT / ".venv-ref/bin/python")))
    parser.add_argument("--denoise-only", action="store_true", help="time our host vs device denoising loops only")
    args = parser.parse_args()

    from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
    from mindglm_image.runtime import setup_runtime
    from mindglm_image.tiny_model import make_tiny_model

    setup_runtime("CPU")
    model = args.model or make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", progress=False)
    pipe = GlmImagePipeline.from_pretrained(model)
    if args.denoise_only:
        print(json.dumps(compare_denoise_loops(pipe, args), indent=2))
        return
    samplers = compare_samplers(pipe, args.height, args.width, args.repeats)
    if args.samplers_only:
        print(json.dumps({"model": str(model), "size": f"{args.height}x{args.width}", "ar_samplers": samplers}, indent=2))
        return
    runs = []
    for _ in range(1 + args.repeats):
        out = pipe(PROMPT, height=args.height, width=args.width, num_inference_steps=args.steps, progress=False)
        runs.append(out.timings)
    cold, warm = runs[0], runs[1:]
    ours = {"ar_tokens": cold.ar_tokens,
            "cold_ar_tok_per_s": cold.ar_tokens / cold.ar_seconds, "cold_s_per_step": cold.denoise_seconds / cold.steps,
            "warm_ar_tok_per_s": max(t.ar_tokens / t.ar_seconds for t in warm),
            "warm_s_per_step": min(t.denoise_seconds / t.steps for t in warm)}
    from mindglm_image.runtime import reference_env
    proc = subprocess.run([args.ref_python, str(ROOT / "scripts/reference/bench_generate_ref.py"), str(model),
                           str(args.height), str(args.width), str(args.steps), str(args.repeats)],
                          capture_output=True, text=True, check=True, env=reference_env())
    ref = json.loads(proc.stdout.strip().splitlines()[-1])
    ref_tok_s, ref_step = ref["ar_tokens"] / ref["ar_s"], ref["denoise_s"] / ref["steps"]
    report = {"model": str(model), "size": f"{args.height}x{args.width}", "steps": args.steps,
              "ours": {k: round(v, 4) for k, v in ours.items()},
              "reference": {"ar_tok_per_s": round(ref_tok_s, 2), "s_per_step": round(ref_step, 4)},
              "warm_ratio_vs_reference": {"ar_speed": round(ours["warm_ar_tok_per_s"] / ref_tok_s, 2),
                                          "denoise_speed": round(ref_step / ours["warm_s_per_step"], 2)},
              "ar_samplers": samplers}
    print(json.dumps(report, indent=2))


def compare_denoise_loops(pipe, args) -> dict:
    """s/step of the host and device loops (cold: first call, compiling; warm: best of ``--repeats``) on one
    prompt's inputs, the median speedup over back-to-back pairs (robust to a shared machine's load), their
    host syncs per image and max |device - host| / max |host| of the final latents."""
    import numpy as np

    from mindglm_image.pipeline.denoise import DenoiseConfig, denoise
    from mindglm_image.scheduler.flow_match import image_seq_len

    glyph = pipe.encode_glyphs([PROMPT], True, 1)
    patches = image_seq_len(args.height, args.width, pipe.vae_scale_factor, pipe.transformer.config.patch_size)
    ids = np.random.default_rng(0).integers(0, pipe.transformer.config.prior_vq_quantizer_codebook_size, (1, patches))
    latents = pipe.prepare_latents(1, 1, args.height, args.width, 0, None)
    loops = {"host_two_calls": False, "device_batched": True}
    seconds, outs = {name: [] for name in loops}, {}
    for _ in range(1 + args.repeats):  # the loops alternate, so a change of machine load hits both
        for name, device_loop in loops.items():
            cfg = DenoiseConfig(args.steps, 1.5, pipe.vae_scale_factor, progress=False, device_loop=device_loop)
            start = time.perf_counter()
            outs[name] = denoise(pipe.transformer, pipe.scheduler, latents, ids, glyph.positive, glyph.negative,
                                 args.height, args.width, cfg, None, glyph.mask)
            seconds[name].append(time.perf_counter() - start)
    report = {name: {"cold_s_per_step": round(times[0] / args.steps, 4),
                     "warm_s_per_step": round(min(times[1:]) / args.steps, 4),
                     "host_syncs_per_image": outs[name].host_syncs} for name, times in seconds.items()}
    finals = {name: out.latents for name, out in outs.items()}
    host, device = finals["host_two_calls"], finals["device_batched"]
    return {"size": f"{args.height}x{args.width}", "steps": args.steps, **report,
            "warm_speedup": round(report["host_two_calls"]["warm_s_per_step"] / report["device_batched"]["warm_s_per_step"], 2),
            "median_paired_speedup": round(float(np.median([h / d for h, d in zip(seconds["host_two_calls"][1:],
                                                                                     seconds["device_batched"][1:])])), 2),
            "final_latents_rel_diff": float(np.abs(device - host).max() / np.abs(host).max())}
def compare_samplers(pipe, height: int, width: int, repeats: int) -> dict:
    """AR tokens/s and host readbacks per image with the numpy sampler and the on-device one: after one
    compiling run each, ``repeats`` warm pairs run back to back, so a pair sees about the same machine
    load; reports the best run of each and the median of the per-pair speed ratios."""
    from mindglm_image.generation.prior import PriorGenerationConfig, PriorGenerator
    from mindglm_image.generation.sampling import SamplingConfig

    generators = {name: PriorGenerator(pipe.vision_language_encoder, PriorGenerationConfig(device_sampling=on_device))
                  for name, on_device in (("numpy", False), ("device", True))}
    speeds = {name: [] for name in generators}
    syncs, original = {}, pipe.generator
    for run in range(1 + repeats):
        for name, generator in generators.items():
            pipe.generator = generator
            start = time.perf_counter()
            prior = pipe.generate_prior([PROMPT], height, width, SamplingConfig(seed=run), progress=False)
            seconds = time.perf_counter() - start
            if run:
                speeds[name].append(prior.generated.size / seconds)
            syncs[name] = prior.host_syncs
    pipe.generator = original
    ratios = sorted(d / n for d, n in zip(speeds["device"], speeds["numpy"]))
    return {"tokens": int(prior.generated.size), **{f"{n}_best_tok_per_s": round(max(v), 1) for n, v in speeds.items()},
            **{f"{n}_host_syncs": v for n, v in syncs.items()},
            "device_vs_numpy_median_pair": round(ratios[len(ratios) // 2], 2)}


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"benchmark wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)
