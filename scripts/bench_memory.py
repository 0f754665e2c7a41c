"""Peak host memory (RSS) of one generation, our pipeline against the reference, on a mid-size random model.

Writes a model with make-tiny's layout and mid-size widths (AR hidden 1024 x 4 layers, DiT 8 heads x 128 x
4 blocks; the other parts tiny), runs one 512 x 512 text-to-image generation in a fresh process per side
and prints the RSS after each stage (load, AR prior, denoising loop, VAE decode; ``VmRSS`` now, ``VmHWM`` peak
so far), so the stage that grows memory shows. A watchdog ends a side that passes ``--limit-gb`` (the machine is shared).

    .venv/bin/python scripts/bench_memory.py --steps 4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = 'A cat holding a sign that says "hello"'
#: mid-size overrides of configs/tiny/ (keys inside nested dicts: "text_config.hidden_size")
MID_SIZE = {
    "vision_language_encoder": {"text_config.hidden_size": 1024, "text_config.intermediate_size": 4096,
                                "text_config.num_attention_heads": 8, "text_config.num_key_value_heads": 2,
                                "text_config.num_hidden_layers": 4,
                                "text_config.rope_parameters.mrope_section": [8, 12, 12]},
    "transformer": {"num_attention_heads": 8, "attention_head_dim": 128, "num_layers": 4, "time_embed_dim": 512,
                    "condition_dim": 256},
}


def stage_rss() -> dict[str, float]:
    """This process's current and peak RSS in GB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024**2, 3) for k in ("VmRSS", "VmHWM")}


def start_watchdog(limit_gb: float) -> None:
    """End this process (exit 3) if its RSS passes ``limit_gb``."""
    import threading
    import time

    def watch():
        while True:
            if stage_rss()["VmRSS"] > limit_gb:
                print(json.dumps({"error": f"RSS above {limit_gb} GB, stopped"}), flush=True)
                os._exit(3)
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


def write_mid_model(folder: Path) -> Path:
    from mindglm_image.tiny_model import TINY_CONFIG_DIR, make_tiny_model

    configs = folder / "configs"
    shutil.copytree(TINY_CONFIG_DIR, configs)
    for part, overrides in MID_SIZE.items():
        data = json.loads((configs / f"{part}.json").read_text())
        for dotted, value in overrides.items():
            *path, leaf = dotted.split(".")
            node = data
            for key in path:
                node = node[key]
            node[leaf] = value
        (configs / f"{part}.json").write_text(json.dumps(data, indent=2))
    return make_tiny_model(folder / "model", progress=False, config_dir=configs)


def run_ours(model: Path, height: int, width: int, steps: int) -> dict:
    stages = {"start": stage_rss()}
    from mindglm_image.generation.sampling import SamplingConfig
    from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
    from mindglm_image.runtime import setup_runtime

    setup_runtime("CPU")
    stages["import"] = stage_rss()
    pipe = GlmImagePipeline.from_pretrained(model)
    stages["load"] = stage_rss()
    prior = pipe.generate_prior([PROMPT], height, width, SamplingConfig(do_sample=False), progress=False)
    stages["ar"] = stage_rss()
    record_before(pipe.vae, "decode", stages, "denoise")
    pipe(PROMPT, height=height, width=width, num_inference_steps=steps, prior_token_ids=prior.prior_ids, progress=False)
    stages["decode"] = stage_rss()
    return stages


def record_before(owner, method: str, stages: dict, name: str) -> None:
    """Wrap ``owner.method`` so that ``stages[name]`` records the RSS when it is first called (the end of
    the stage before it: the denoising loop ends where the VAE decode starts)."""
    original = getattr(owner, method)

    def wrapped(*args, **kwargs):
        stages.setdefault(name, stage_rss())
        return original(*args, **kwargs)

    setattr(owner, method, wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--limit-gb", type=float, default=8.0, help="watchdog: stop a side above this RSS")
    parser.add_argument("--side", choices=("both", "ours"), default="both")
    parser.add_argument("--model", type=Path, default=None, help="(internal) model folder of a side's process")
    parser.add_argument("--ref-python", default=os.environ.get("MINDGLM_REF_PYTHON", str(ROOT / ".venv-ref/bin/python")))
    args = parser.parse_args()
    if args.model is not None:  # one side, in its own process
        start_watchdog(args.limit_gb)
        print(json.dumps(run_ours(args.model, args.height, args.width, args.steps)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = write_mid_model(Path(tmp))
        common = [str(args.height), str(args.width), str(args.steps), str(args.limit_gb)]
        sides = {"ours": [sys.executable, __file__, "--model", str(model), "--height", common[0], "--width", common[1],
                          "--steps", common[2], "--limit-gb", common[3]]}
        if args.side == "both":
            sides["reference"] = [args.ref_python, str(ROOT / "scripts/reference/bench_memory_ref.py"), str(model), *common]
        from mindglm_image.runtime import reference_env

        report = {}
        for side, cmd in sides.items():
            env = reference_env() if side == "reference" else dict(os.environ)
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)})
            lines = proc.stdout.strip().splitlines()
            report[side] = json.loads(lines[-1]) if lines else {"error": proc.stderr[-2000:]}
        peaks = {side: max(s["VmHWM"] for s in stages.values()) for side, stages in report.items() if "error" not in stages}
        report["peak_gb"] = peaks
        if len(peaks) == 2:
            report["ratio_ours_vs_reference"] = round(peaks["ours"] / peaks["reference"], 2)
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
