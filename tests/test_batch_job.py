"""Batch generation job: prompt files, sharding by rank, resumability, and a real msrun run on CPU."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mindglm_image.jobs.batch_generate import BatchJobConfig, read_items, run_batch
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.tiny_model import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ['{"id": "sign", "prompt": "a sign that says \\"hi\\""}', '{"prompt": "a lake", "seed": 7}',
           '{"id": "bird", "prompt": "a blue bird"}']


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("batch") / "tiny", progress=False)


@pytest.fixture(scope="module")
def pipe(tiny):
    return GlmImagePipeline.from_pretrained(tiny)


def _job(tmp_path, tiny, out="out", **kw) -> BatchJobConfig:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return BatchJobConfig.from_dict({"model": str(tiny), "prompts": str(prompts), "out_dir": str(tmp_path / out),
                                     "height": 64, "width": 64, "steps": 2, "base_seed": 100, **kw})


def test_read_items(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(PROMPTS) + "\n\n")
    items = read_items(path, base_seed=100)
    assert [(i.id, i.seed) for i in items] == [("sign", 100), ("000001", 7), ("bird", 102)]
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    assert [(i.id, i.prompt) for i in read_items(txt)] == [("000000", "first prompt"), ("000002", "second prompt")]


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a"}', "{oops"], r"p.jsonl:2: not valid JSON"),
    (['{"text": "a"}'], "needs a JSON object with a 'prompt' string"),
    (['{"id": "x", "prompt": "a"}', '{"id": "x", "prompt": "b"}'], "id 'x' is duplicated"),
    (['{"id": "../x", "prompt": "a"}'], "not a plain file name"),
])
def test_bad_prompt_files(tmp_path, lines, message):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=message):
        read_items(path)
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        read_items(tmp_path / "missing.jsonl")


def test_run_resume_and_shard(pipe, tiny, tmp_path):
    cfg = _job(tmp_path, tiny)
    assert run_batch(cfg, pipe, progress=False) == {"rank": 0, "world": 1, "assigned": 3, "generated": 3, "skipped": 0}
    out = Path(cfg.out_dir)
    meta = json.loads((out / "000001.json").read_text())
    assert meta["seed"] == 7 and meta["prompt"] == "a lake" and np.asarray(Image.open(out / "000001.png")).shape == (64, 64, 3)
    before = (out / "sign.png").stat().st_mtime_ns
    (out / "bird.json").unlink()  # as if the job was killed between the image and its record
    assert run_batch(cfg, pipe, progress=False)["generated"] == 1
    assert (out / "sign.png").stat().st_mtime_ns == before
    shard = [_job(tmp_path, tiny, out="sharded") for _ in range(2)]
    summaries = [run_batch(shard[r], pipe, rank=r, world=2, progress=False) for r in range(2)]
    assert [s["assigned"] for s in summaries] == [2, 1]
    for name in ("sign", "000001", "bird"):  # batch_size 1: the sharded images equal the single-worker ones
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}.png")),
                                      np.asarray(Image.open(tmp_path / "sharded" / f"{name}.png")))


@pytest.mark.slow
def test_msrun_two_cpu_workers(tiny, tmp_path):
    msrun = shutil.which("msrun", path=str(Path(sys.executable).parent))
    assert msrun, "msrun (installed with mindspore) not found beside the Python interpreter"
    cfg = _job(tmp_path, tiny)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with socket.socket() as probe:  # a free loopback port for msrun's scheduler
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.run([msrun, "--worker_num=2", "--local_worker_num=2", f"--master_port={port}",
                           f"--log_dir={tmp_path / 'logs'}", "--join=True", str(ROOT / "scripts" / "batch_generate.py"),
                           "--model", cfg.model, "--prompts", cfg.prompts, "--out-dir", cfg.out_dir,
                           "--height", "64", "--width", "64", "--steps", "2", "--base-seed", "100"],
                          env=env, capture_output=True, text=True, timeout=600)
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").glob("worker_*.log")))
    assert proc.returncode == 0, logs[-4000:]
    summaries = sorted((json.loads(line) for line in logs.splitlines() if line.startswith('{"rank"')), key=lambda s: s["rank"])
    assert [(s["rank"], s["world"], s["generated"]) for s in summaries] == [(0, 2, 2), (1, 2, 1)]
    assert sorted(p.name for p in Path(cfg.out_dir).glob("*.png")) == ["000001.png", "bird.png", "sign.png"]
