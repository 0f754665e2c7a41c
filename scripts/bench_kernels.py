"""Fused operators on CPU: each operator composite vs C++ twin vs the PyTorch op, and end to end.

Operators: the same shapes and random inputs in one run; ours in graph mode (one compiled cell per
operator and mode), best of ``--repeats`` after a warm-up call. End to end: the tiny model's pipeline
(AR decode tokens/s, CFG denoise s/step) with ``MINDGLM_KERNELS=composite`` and ``fused``, each in its own
process (peak RSS per process), against the reference pipeline (``reference/bench_generate_ref.py``).

    .venv/bin/python scripts/bench_kernels.py --repeats 5
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
_MASKED = -3.4028234663852886e38

# case -> operator and input shapes: DiT joint attention of a 512x512 image (32x32 patches + 32 glyph
# tokens, CFG batch 2, 8 heads x 128), an AR decode step over a static cache, norms at hidden 1024
CASES = {
    "dit_attention_512px": {"op": "attention", "shapes": {"q": (2, 8, 1056, 128), "k": (2, 8, 1056, 128),
                                                          "v": (2, 8, 1056, 128), "bias": (2, 1, 1, 1056)}},
    # the same in the DiT's own layout (B, S, H, d): what its blocks call (torch: SDPA on transposed views)
    "dit_attention_512px_bsnd": {"op": "attention", "layout": "BSND",
                                 "shapes": {"q": (2, 1056, 8, 128), "k": (2, 1056, 8, 128), "v": (2, 1056, 8, 128),
                                            "bias": (2, 1, 1, 1056)}},
    "ar_decode_attention": {"op": "attention", "shapes": {"q": (2, 8, 1, 128), "k": (2, 2, 1280, 128),
                                                          "v": (2, 2, 1280, 128), "bias": (2, 1, 1, 1280)}},
    "rms_norm": {"op": "rms_norm", "shapes": {"x": (2, 256, 1024), "w": (1024,)}},
    "add_rms_norm": {"op": "add_rms_norm", "shapes": {"x": (2, 256, 1024), "r": (2, 256, 1024), "w": (1024,)}},
    "ada_layer_norm": {"op": "ada_layer_norm", "shapes": {"x": (2, 1056, 1024), "shift": (2, 1024),
                                                          "scale": (2, 1024)}},
    # a DiT block's gated residual at 512 px (x + y * gate, one gate row per sample)
    "dit_gated_residual_512px": {"op": "gated_residual", "shapes": {"x": (2, 1056, 1024), "y": (2, 1056, 1024),
                                                                    "gate": (2, 1024)}},
    # AR decode projections against a 64 MB weight (beyond the 32 MB L3, as a whole model's weights are):
    # one prompt with a bias, and the engine's batch of 8 prompts
    "ar_decode_linear": {"op": "linear", "shapes": {"x": (1, 1, 1024), "w": (16384, 1024), "b": (16384,)}},
    "ar_decode_linear_batch8": {"op": "linear", "shapes": {"x": (8, 1, 1024), "w": (16384, 1024)}},
    # the DiT feed-forward's first projection at 512 px, CFG rows (2 x 1100 tokens, 1024 -> 4096): a GEMM, where
    # the twin is MatMul too (LinearTwin leaves many-row products to it); the step's time is mostly such GEMMs
    "dit_ff_linear_512px": {"op": "linear", "shapes": {"x": (2, 1100, 1024), "w": (4096, 1024), "b": (4096,)}},
    # the DiT's 2-D rope on a 512x512 image's queries (B, S, H, d) with one table for all heads, and the AR
    # MLP's SwiGLU over a 256-token prompt at intermediate size 4096
    "dit_rotary_512px": {"op": "rotary", "shapes": {"x": (2, 1024, 8, 128), "cos": (1024, 1, 128), "sin": (1024, 1, 128)}},
    "ar_swiglu": {"op": "swiglu", "shapes": {"x": (2, 256, 8192)}},
    # the DiT feed-forward's GELU(tanh) at 512 px (hidden 1024 x 4) and its per-head qk LayerNorm
    "dit_gelu_tanh_512px": {"op": "gelu", "shapes": {"x": (2, 1056, 4096)}},
    "dit_qk_layer_norm_512px": {"op": "layer_norm", "shapes": {"x": (2, 1056, 8, 128)}},
    # the AR decode step's sampler and its bookkeeping over the real model's 16384 image ids (temperature 0.9,
    # top-p 0.75: the generation config's; torch: transformers' order of the same filters, one multinomial draw
    # and its end-marker bookkeeping)
    "ar_sample_step": {"op": "sample_step", "shapes": {"logits": (1, 16384), "index": (1,), "uniforms": (1, 2),
                                                       "params": (4,), "limits": (2,), "finished": (1,),
                                                       "flags": (3,), "tokens": (1, 2)}},
    # the denoising loop's sampler step at 512 px (64 x 64 x 16 latents, CFG rows; torch: diffusers' guidance mix
    # and FlowMatchEulerDiscreteScheduler.step's update, no non-finite check)
    "dit_guided_euler_step_512px": {"op": "guided_euler_step", "shapes": {"output": (2, 16, 64, 64),
                                                                          "latents": (1, 16, 64, 64), "dt": (),
                                                                          "index": (), "guidance": (), "record": (2,)}},
    # a VAE decoder conv at 256 px (the built-in Conv2D on every device: no twin, so composite = twin)
    "vae_conv3x3_256px": {"op": "conv2d", "shapes": {"x": (1, 32, 256, 256), "w": (32, 32, 3, 3), "b": (32,)}},
}


def _peak_mb() -> float:
    """This process's peak RSS (VmHWM: per address space, so not inherited from the parent as ru_maxrss is)."""
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _inputs(spec: dict) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in spec["shapes"].items()}
    if spec["op"] == "sample_step":
        arrays["uniforms"] = rng.random(spec["shapes"]["uniforms"]).astype(np.float32)
        arrays["params"] = np.array([0.9, 0, 0.75, 1], np.float32)
        arrays["limits"] = np.full(spec["shapes"]["limits"], spec["shapes"]["logits"][-1], np.int32)
        for name in ("index", "finished", "flags", "tokens"):
            arrays[name] = np.zeros(spec["shapes"][name], np.int32)
    if spec["op"] == "guided_euler_step":
        arrays.update(dt=np.float32(-0.05), index=np.int32(3), guidance=np.float32(1.5),
                      record=np.array([-1, 0], np.int32))
    if "bias" in arrays:  # a padding mask: the first 4 keys of sample 0 masked
        arrays["bias"] = np.zeros_like(arrays["bias"])
        arrays["bias"][0, ..., :4] = _MASKED
    return arrays


def bench_ops(repeats: int) -> dict:
    from mindspore import Tensor, nn

    from mindglm_image.ops import registry

    class Call(nn.Cell):
        def __init__(self, op: str, mode: str, layout: str):
            super().__init__()
            self.op = op
            self.fn = registry.resolve(op, "CPU", mode).fn
            self.layout = layout

        def construct(self, a, b=None, c=None, d=None, *rest):
            if self.op in ("rotary", "linear", "gated_residual"):
                return self.fn(a, b, c)
            if self.op == "swiglu":
                return self.fn(a)
            if self.op == "gelu":
                return self.fn(a, "tanh")
            if self.op == "layer_norm":
                return self.fn(a, 1e-6)
            if self.op == "conv2d":
                return self.fn(a, b, c, 1, 1)
            if self.op == "sample_step":
                return self.fn(a, b, c, d, *rest, 2)
            if self.op == "guided_euler_step":
                return self.fn(a, b, c, d, *rest)
            if self.op == "attention":
                return self.fn(a, b, c, 0.08838834764831845, d, self.layout)
            if self.op == "rms_norm":
                return self.fn(a, b, 1e-6)
            if self.op == "add_rms_norm":
                return self.fn(a, b, c, 1e-6)
            return self.fn(a, b, c, 1e-5)

    results = {}
    for name, spec in CASES.items():
        args = [Tensor(a) for a in _inputs(spec).values()]
        row = {}
        for mode in ("composite", "fused"):
            cell = Call(spec["op"], mode, spec.get("layout", "BNSD"))
            cell(*args)
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                out = cell(*args)
                (out[0] if isinstance(out, tuple) else out).asnumpy()
                best = min(best, time.perf_counter() - start)
            row[mode] = best
        results[name] = row
    return results


def bench_e2e(model: str, height: int, width: int, steps: int, repeats: int) -> dict:
    """One pipeline in this process (MINDGLM_KERNELS is read when its cells are built)."""
    from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
    from mindglm_image.runtime import setup_runtime

    setup_runtime("CPU")
    pipe = GlmImagePipeline.from_pretrained(model)
    runs = [pipe(PROMPT, height=height, width=width, num_inference_steps=steps, progress=False).timings
            for _ in range(1 + repeats)]
    return {"ar_tok_per_s": max(t.ar_tokens / t.ar_seconds for t in runs[1:]),
            "s_per_step": min(t.denoise_seconds / t.steps for t in runs[1:]), "peak_rss_mb": _peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default=None, help="model folder for end to end (default: a fresh make-tiny model)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip-e2e", action="store_true", help="operators only")
    parser.add_argument("--child-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="environment of our end-to-end processes, e.g. OMP_WAIT_POLICY=active (threads "
                             "always spin) or OMP_WAIT_POLICY= (libgomp's own default) against the package's passive")
    parser.add_argument("--e2e-child", default=None, help=argparse.SUPPRESS)  # internal: one pipeline run
    parser.add_argument("--ref-python", default=os.environ.get("MINDGLM_REF_PYTHON", str(ROOT / ".venv-ref/bin/python")))
    args = parser.parse_args()
    if args.e2e_child:
        print(json.dumps(bench_e2e(args.e2e_child, args.height, args.width, args.steps, args.repeats)))
        return

    from mindglm_image.runtime import setup_runtime

    setup_runtime("CPU")  # graph mode, as the pipeline runs
    from mindglm_image.runtime import reference_env
    ref = subprocess.run([args.ref_python, str(ROOT / "scripts/reference/bench_kernels_ref.py"), json.dumps(CASES),
                          str(args.repeats)], capture_output=True, text=True, check=True, env=reference_env())
    ref_ops = json.loads(ref.stdout.strip().splitlines()[-1])
    ops = bench_ops(args.repeats)
    report = {"operators_ms": {name: {"composite": round(1e3 * row["composite"], 3), "twin": round(1e3 * row["fused"], 3),
                                      "torch": round(1e3 * ref_ops[name], 3),
                                      "twin_vs_composite": round(row["composite"] / row["fused"], 2),
                                      "twin_vs_torch": round(ref_ops[name] / row["fused"], 2)}
                               for name, row in ops.items()}}
    if not args.skip_e2e:
        from mindglm_image.tiny_model import make_tiny_model

        model = str(args.model or make_tiny_model(Path(tempfile.mkdtemp()) / "tiny", progress=False))
        # the reference script run in-process by a wrapper that prints its VmHWM afterwards
        wrapper = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
                   "print([l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1])")
        proc = subprocess.run([args.ref_python, "-c", wrapper, str(ROOT / "scripts/reference/bench_generate_ref.py"),
                               model, str(args.height), str(args.width), str(args.steps), str(args.repeats)],
                              capture_output=True, text=True, check=True, env=reference_env())
        *_, ref_line, ref_kb = proc.stdout.strip().splitlines()
        r = json.loads(ref_line)
        ref_peak = int(ref_kb) / 1024
        e2e = {"reference": {"ar_tok_per_s": r["ar_tokens"] / r["ar_s"], "s_per_step": r["denoise_s"] / r["steps"],
                             "peak_rss_mb": ref_peak}}
        for mode in ("composite", "fused"):
            child = subprocess.run([sys.executable, __file__, "--e2e-child", model, "--height", str(args.height),
                                    "--width", str(args.width), "--steps", str(args.steps), "--repeats",
                                    str(args.repeats)], capture_output=True, text=True, check=True,
                                   env={**os.environ, "MINDGLM_KERNELS": mode,
                                        **dict(item.split("=", 1) for item in args.child_env)})
            e2e[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        for mode in ("composite", "fused"):
            e2e[mode]["ar_vs_reference"] = e2e[mode]["ar_tok_per_s"] / e2e["reference"]["ar_tok_per_s"]
            e2e[mode]["step_vs_reference"] = e2e["reference"]["s_per_step"] / e2e[mode]["s_per_step"]
        report["end_to_end"] = {"model": model, "size": f"{args.height}x{args.width}", "steps": args.steps,
                                "child_env": args.child_env,
                                **{k: {m: round(v, 4) for m, v in row.items()} for k, row in e2e.items()}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"benchmark wall time {time.perf_counter() - start:.0f} s", file=sys.stderr)
