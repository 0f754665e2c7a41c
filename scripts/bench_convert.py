"""Benchmark checkpoint conversion on a multi-GB synthetic checkpoint with the real names and shapes.

Writes a Hugging Face style ``vision_language_encoder/`` (the real config, text layers trimmed to reach
``--size-gb``; bf16 like the official weights; 2 GB shards), converts it with ``mindglm-image convert``
in a child process while sampling that process's memory, then verifies it. Reports throughput (GB/s)
and peak RSS against the size of the largest tensor.

    .venv/bin/python scripts/bench_convert.py --work /tmp/bench --size-gb 4.5
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mindglm_image.config.ar import GlmImageConfig  # noqa: E402
from mindglm_image.weights.components import COMPONENTS, build_cell  # noqa: E402
from mindglm_image.weights.safetensors_io import write_safetensors_streamed  # noqa: E402


def _layer_bytes(cfg: GlmImageConfig) -> int:
    t = cfg.text_config
    kv = t.num_key_value_heads * t.resolved_head_dim
    per_layer = 2 * t.hidden_size**2 + 2 * t.hidden_size * kv + 2 * kv + t.hidden_size + 3 * t.hidden_size * t.intermediate_size
    return 2 * per_layer


def make_checkpoint(folder: Path, size_gb: float, shard_gb: float = 2.0) -> dict:
    cfg = GlmImageConfig.from_json_file(ROOT / "configs" / "glm_image" / "vision_language_encoder" / "config.json")
    cfg.text_config.num_hidden_layers = 1
    base = sum(int(np.prod(p.shape)) * 2 for p in build_cell(COMPONENTS["vision_language_encoder"], cfg).parameters_dict().values())
    cfg.text_config.num_hidden_layers = max(1, 1 + int(np.ceil((size_gb * 1e9 - base) / _layer_bytes(cfg))))
    part = folder / "vision_language_encoder"
    part.mkdir(parents=True, exist_ok=True)
    cfg.to_json_file(part / "config.json")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "GlmImagePipeline",
                                                         "vision_language_encoder": ["transformers", "GlmImageForConditionalGeneration"]}))
    shapes = {n: tuple(p.shape) for n, p in build_cell(COMPONENTS["vision_language_encoder"], cfg).parameters_dict().items()}
    rng = np.random.default_rng(0)
    names = list(shapes)
    sizes = {n: int(np.prod(shapes[n])) * 2 for n in names}
    shards, used = [[]], 0
    for n in names:
        if shards[-1] and used + sizes[n] > shard_gb * 1e9:
            shards.append([])
            used = 0
        shards[-1].append(n)
        used += sizes[n]
    weight_map = {}
    for i, group in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"

        def payload(group=group):
            for n in group:  # finite bf16 values (exponent kept in a sane range), generated one tensor at a time
                bits = (rng.integers(0, 1 << 16, size=int(np.prod(shapes[n])), dtype=np.uint16) & 0x3FFF) | 0x3000
                yield bits.view(np.uint8)

        write_safetensors_streamed(part / fname, [(n, "BF16", shapes[n]) for n in group], payload(), {"format": "pt"})
        weight_map.update({n: fname for n in group})
    (part / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": sum(sizes.values())},
                                                                   "weight_map": weight_map}))
    return {"total_bytes": sum(sizes.values()), "largest_tensor_bytes": max(sizes.values()),
            "text_layers": cfg.text_config.num_hidden_layers, "tensors": len(names), "shards": len(shards)}


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; return (seconds, peak RSS GB (VmHWM), peak anonymous RSS GB sampled every 20 ms)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak_anon = [0]
    hwm = [0]

    def sample():
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
                peak_anon[0] = max(peak_anon[0], int(fields["RssAnon"].split()[0]))
                hwm[0] = max(hwm[0], int(fields["VmHWM"].split()[0]))
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.02)

    thread = threading.Thread(target=sample)
    thread.start()
    code = proc.wait()
    thread.join()
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {code}")
    return time.perf_counter() - start, hwm[0] / 1e6 * 1.024, peak_anon[0] / 1e6 * 1.024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (needs ~3x --size-gb of disk)")
    parser.add_argument("--size-gb", type=float, default=4.5)
    parser.add_argument("--keep", action="store_true", help="keep the generated folders")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    t0 = time.perf_counter()
    info = make_checkpoint(args.work / "hf", args.size_gb)
    info["generate_s"] = round(time.perf_counter() - t0, 1)
    cli = [sys.executable, "-m", "mindglm_image.cli"]
    secs, hwm, anon = run_measured(cli + ["convert", "--from", "hf", "--src", str(args.work / "hf"), "--dst", str(args.work / "ms")])
    vsecs, _, _ = run_measured(cli + ["verify", str(args.work / "ms"), "--source", str(args.work / "hf")])
    gb = info["total_bytes"] / 1e9
    largest = info["largest_tensor_bytes"] / 1e9
    report = {**info, "checkpoint_gb": round(gb, 2), "largest_tensor_gb": round(largest, 2),
              "convert_s": round(secs, 1), "convert_gb_per_s": round(gb / secs, 3),
              "peak_rss_gb": round(hwm, 2), "peak_anon_rss_gb": round(anon, 2),
              "peak_rss_over_largest_tensor": round(hwm / largest, 2),
              "peak_anon_rss_over_largest_tensor": round(anon / largest, 2),
              "verify_s": round(vsecs, 1), "verify_gb_per_s": round(2 * gb / vsecs, 3)}
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
