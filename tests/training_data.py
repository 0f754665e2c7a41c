"""An in-memory stand-in for ``training.data.PreparedDataset`` (same interface and sample keys), a runner
for the train-dit job on it in a subprocess (the resume-after-SIGKILL and msrun tests), and the msrun launcher."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class ArrayDataset:
    """Samples as dicts of numpy arrays; buckets by the ``size`` key, as prepared datasets bucket."""

    def __init__(self, samples: list[dict]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]

    def buckets(self) -> dict[tuple[int, int], list[int]]:
        out: dict[tuple[int, int], list[int]] = {}
        for i, s in enumerate(self.samples):
            out.setdefault(tuple(int(v) for v in s["size"]), []).append(i)
        return out

    def save(self, path: Path) -> None:
        np.savez(path, **{f"{i}/{k}": v for i, s in enumerate(self.samples) for k, v in s.items()})

    @classmethod
    def load(cls, path: Path) -> "ArrayDataset":
        data = np.load(path)
        samples: dict[int, dict] = {}
        for key in data.files:
            i, name = key.split("/", 1)
            samples.setdefault(int(i), {})[name] = data[key]
        return cls([samples[i] for i in sorted(samples)])


def random_samples(config, sizes: list[tuple[int, int]], seed: int = 0, text: int = 3) -> list[dict]:
    """Random DiT samples (latents, prior ids, glyph, pixel size) for the given pixel sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        lh, lw = h // 8, w // 8
        out.append({"latents": rng.standard_normal((config.in_channels, lh, lw)).astype(np.float32),
                    "prior_ids": rng.integers(0, config.prior_vq_quantizer_codebook_size,
                                              (lh // config.patch_size) * (lw // config.patch_size)).astype(np.int32),
                    "glyph": rng.standard_normal((text, config.text_embed_dim)).astype(np.float32),
                    "size": np.array([h, w], np.int32)})
    return out


def run_msrun(args: list[str], logs: Path, workers: int = 2) -> list[str]:
    """Run ``python args...`` on ``workers`` msrun CPU workers (repo and tests on the path); returns each worker's
    log, rank order. Fails with the logs' tail when a worker fails."""
    msrun = shutil.which("msrun", path=str(Path(sys.executable).parent))
    assert msrun, "msrun (installed with mindspore) not found beside the Python interpreter"
    with socket.socket() as probe:  # a free loopback port for msrun's scheduler
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    proc = subprocess.run([msrun, f"--worker_num={workers}", f"--local_worker_num={workers}", f"--master_port={port}",
                           f"--log_dir={logs}", "--join=True", *args], env=env, capture_output=True, text=True,
                          timeout=600)
    texts = [logs.joinpath(f"worker_{r}.log").read_text() for r in range(workers)]
    assert proc.returncode == 0, "".join(texts)[-4000:]
    return texts


if __name__ == "__main__":  # python tests/training_data.py CONFIG.json DATA.npz
    from mindglm_image.jobs.train_dit import train_dit
    from mindglm_image.training.config import TrainConfig

    cfg = TrainConfig.from_json_file(sys.argv[1])
    summary = train_dit(cfg, ArrayDataset.load(Path(sys.argv[2])), progress=False)
    print(json.dumps({"done": summary["steps"], "state_elements": summary["optimizer_state_elements"]}), flush=True)
