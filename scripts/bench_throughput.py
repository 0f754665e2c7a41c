"""Throughput: images per minute for the same prompts, same model, one run: the reference pipeline, our
sequential pipeline (one call per prompt, as the batch job with ``overlap: false``) and our stage-overlap
engine (``pipeline/engine.py``, as the batch job's default), plus host syncs per image.

Sizes: ``tiny`` (make-tiny's model) and ``mid`` (scripts/bench_memory.py's mid-size model: AR hidden 1024 x 4
layers, DiT 8 heads x 128 x 4 blocks). Every side is timed warm, on ``--prompts`` prompts:

- reference (``.venv-ref``) and ours sequential: a warm-up round (the prompts with other seeds: our graphs
  are compiled per shape, and prompt lengths differ), then the prompts one call each, timed;
- engine: both rounds in one run, timed from the first round's last image to the second round's last (the
  second round's AR overlaps the first round's DiT, as in a long job).

Host syncs: calls of ``mindspore.Tensor.asnumpy`` (every readback to the host our code makes) per image,
counted in each of our processes (the engine's stage workers write their counts to files); the
reference's are not counted. The engine's images are compared with the sequential ones (max uint8 step).

``--sides`` picks a subset of the three; ``--stage-threads 0 1`` times one engine side per CPU thread budget of
its stage workers (0, the default: all cores for each worker; 1 on the 2-core machine: the cores split evenly).

    .venv/bin/python scripts/bench_throughput.py --sizes tiny
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
PROMPTS = ['A cat holding a sign that says "hello"', "a red bicycle leaning on a yellow wall",
           "a mountain lake at sunset", 'a shop window with the word "OPEN"', "a bowl of fruit on a wooden table",
           "an astronaut riding a horse on the moon, oil painting", "a lighthouse in a storm", "a blue bird"]
SIZES = {"tiny": (256, 256), "mid": (512, 512)}
WARM_SEED = 7919  # the warm-up round's seeds: the timed seeds plus this

from mindglm_image.pipeline.engine import PipelineLoader  # noqa: E402  (after the path set-up)


def count_host_syncs(record: Path | None = None) -> list[int]:
    """Wrap ``Tensor.asnumpy`` with a counter (returned, a one-element list); ``record``: also keep the
    count in that file (a stage worker has no other way to report it)."""
    import mindspore as ms

    counter, original = [0], ms.Tensor.asnumpy
    fd = os.open(record, os.O_WRONLY | os.O_CREAT, 0o644) if record else None

    def counted(self):
        counter[0] += 1
        if fd is not None:
            os.pwrite(fd, f"{counter[0]:12d}".encode(), 0)
        return original(self)

    ms.Tensor.asnumpy = counted
    return counter


@dataclasses.dataclass(frozen=True)
class CountingLoader(PipelineLoader):
    """The engine's loader, plus the sync counter in each stage worker (file named by the worker)."""

    count_dir: str = ""

    def __call__(self, threads):
        import multiprocessing

        pipe = super().__call__(threads)
        count_host_syncs(Path(self.count_dir) / multiprocessing.current_process().name)
        return pipe


def run_sequential(model: Path, height: int, width: int, steps: int, prompts: list[str], seeds: list[int]) -> dict:
    pipe = PipelineLoader(str(model))(None)
    for prompt, seed in zip(prompts, seeds):  # warm-up round: every prompt's shapes compiled
        pipe(prompt, height=height, width=width, num_inference_steps=steps, seed=[seed + WARM_SEED], progress=False)
    syncs = count_host_syncs()
    images, start = [], time.perf_counter()
    for prompt, seed in zip(prompts, seeds):
        images.append(np.asarray(pipe(prompt, height=height, width=width, num_inference_steps=steps, seed=[seed],
                                      progress=False).images[0]))
    return {"seconds": time.perf_counter() - start, "syncs_per_image": syncs[0] / len(prompts), "images": images}


def run_engine_side(model: Path, height: int, width: int, steps: int, prompts: list[str], seeds: list[int],
                    engine_cfg: dict) -> dict:
    from mindglm_image.pipeline.engine import EngineConfig, GenerationRequest, run_engine

    n = len(prompts)
    requests = [GenerationRequest(f"{r}-{i}", p, s + (WARM_SEED if r == "warm" else 0), height, width, steps, 1.5)
                for r in ("warm", "timed") for i, (p, s) in enumerate(zip(prompts, seeds))]
    with tempfile.TemporaryDirectory() as counts:
        finished, images, start = [], {}, time.perf_counter()
        for result in run_engine(requests, CountingLoader(str(model), count_dir=counts),
                                 EngineConfig(**engine_cfg)):
            if result.error:
                raise RuntimeError(f"{result.request.key}: {result.error}")
            finished.append(time.perf_counter())
            images[result.request.key] = np.asarray(result.images[0])
        syncs = {p.name: int(p.read_text()) for p in Path(counts).iterdir()}
    return {"seconds": finished[-1] - finished[n - 1], "cold_seconds_all": finished[-1] - start,
            "syncs_per_image": {k: v / len(requests) for k, v in sorted(syncs.items())},
            "images": [images[f"timed-{i}"] for i in range(n)]}


def bench_size(size: str, steps: int, count: int, sides: list[str], engine_cfgs: dict[str, dict], ref_python: str,
               folder: Path) -> dict:
    """Time each side on the same model and prompts; ``engine_cfgs``: engine side name -> EngineConfig fields."""
    from bench_memory import write_mid_model

    from mindglm_image.tiny_model import make_tiny_model

    height, width = SIZES[size]
    model = make_tiny_model(folder / "tiny", progress=False) if size == "tiny" else write_mid_model(folder / "mid")
    prompts, seeds = PROMPTS[:count], [1000 + i for i in range(count)]
    runs: dict[str, dict] = {}
    if "reference" in sides:
        from mindglm_image.runtime import reference_env
        proc = subprocess.run([ref_python, str(ROOT / "scripts/reference/bench_throughput_ref.py"), str(model),
                               str(height), str(width), str(steps), json.dumps(prompts), json.dumps(seeds),
                               str(WARM_SEED)], capture_output=True, text=True, env=reference_env())
        if proc.returncode != 0:
            raise RuntimeError(f"the reference side failed: {proc.stderr[-1500:]}")
        runs["reference"] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "sequential" in sides:
        runs["sequential"] = run_sequential(model, height, width, steps, prompts, seeds)
    if "engine" in sides:
        for name, cfg in engine_cfgs.items():
            runs[name] = run_engine_side(model, height, width, steps, prompts, seeds, cfg)
    report = {"size": f"{height}x{width}", "steps": steps, "prompts": count, "engines": engine_cfgs,
              "images_per_min": {side: round(60 * count / run["seconds"], 2) for side, run in runs.items()},
              "host_syncs_per_image": {side: run["syncs_per_image"] for side, run in runs.items()
                                       if "syncs_per_image" in run}}
    for base in ("reference", "sequential"):
        if base in runs:
            report[f"vs_{base}"] = {side: round(runs[base]["seconds"] / run["seconds"], 2)
                                    for side, run in runs.items() if side != base}
    if "sequential" in runs:
        report["max_uint8_step_vs_sequential"] = {
            side: int(max(np.abs(a.astype(int) - b).max() for a, b in zip(run["images"], runs["sequential"]["images"])))
            for side, run in runs.items() if side not in ("reference", "sequential")}
    report["engine_cold_seconds_all_images"] = {name: round(runs[name]["cold_seconds_all"], 1) for name in engine_cfgs
                                                if name in runs}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=["tiny"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8, choices=range(1, len(PROMPTS) + 1), metavar="N")
    parser.add_argument("--max-ar-batch", type=int, default=8, help="the engine's AR batch (EngineConfig)")
    parser.add_argument("--sides", nargs="+", choices=("reference", "sequential", "engine"),
                        default=["reference", "sequential", "engine"])
    parser.add_argument("--stage-threads", type=int, nargs="+", default=[0],
                        help="CPU kernel threads per stage worker (EngineConfig; 0: all cores for each); "
                             "several values: one engine side each")
    parser.add_argument("--ref-python", default=os.environ.get("MINDGLM_REF_PYTHON", str(ROOT / ".venv-ref/bin/python")))
    args = parser.parse_args()
    from mindglm_image.runtime import setup_runtime

    setup_runtime("CPU")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            start = time.perf_counter()
            engine_cfgs = {("engine" if t == 0 else f"engine_threads{t}"): {"max_ar_batch": args.max_ar_batch,
                                                                             "stage_threads": t}
                           for t in args.stage_threads}
            report = bench_size(size, args.steps, args.prompts, args.sides, engine_cfgs, args.ref_python, Path(tmp))
            report["bench_wall_s"] = round(time.perf_counter() - start)
            print(json.dumps(report, indent=1), flush=True)


if __name__ == "__main__":
    main()
