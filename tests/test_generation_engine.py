"""Stage-overlap engine: the overlapped batch job writes the sequential job's images, survives SIGKILL and
resumes; the prior queue is bounded; failing items and dead workers are reported without hanging.

The engine's own behaviour is tested with ``engine_fakes.FakePipeline`` (instant stages, real worker
processes and queues); image equality and resume with the tiny model at 64 x 64, 2 steps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from engine_fakes import FakeLoader
from PIL import Image

from mindglm_image.config.base import ConfigError
from mindglm_image.jobs.batch_generate import BatchJobConfig, read_items, run_batch
from mindglm_image.pipeline.engine import (EngineConfig, EngineError, GenerationRequest, choose_mode,
                                           run_engine)
from mindglm_image.pipeline.glm_image_pipeline import GlmImagePipeline
from mindglm_image.tiny_model import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ['{"id": "sign", "prompt": "a sign that says \\"OPEN ALL NIGHT\\""}', '{"prompt": "a lake", "seed": 7}',
           '{"id": "bird", "prompt": "a small blue bird sitting on the branch of an old tree"}',
           '{"id": "cat", "prompt": "a cat"}',
           # an explicit seed: a derived one hashes the reference's absolute path, which differs between job folders
           '{"id": "edit", "prompt": "make it blue", "image": "ref.png", "seed": 11}',
           '{"id": "road", "prompt": "a long road", "seed": 3}', '{"id": "sky", "prompt": "a purple sky over the sea"}']


def _request(key: str, prompt: str = "a cat", seed: int = 0) -> GenerationRequest:
    return GenerationRequest(key, prompt, seed, 64, 64, 2, 1.5)


def test_mode_selection():
    assert choose_mode(EngineConfig(), "CPU") == "processes"
    assert choose_mode(EngineConfig(), "Ascend") == "streams"  # one NPU: both stages on its streams
    assert choose_mode(EngineConfig(device_ids=(0, 1)), "Ascend") == "processes"  # AR on NPU 0, DiT on 1
    assert choose_mode(EngineConfig(device_ids=(0,)), "Ascend") == "streams"
    with pytest.raises(ValueError, match="'streams' needs an NPU"):
        choose_mode(EngineConfig(mode="streams"), "CPU")
    with pytest.raises(ValueError, match=r"1 AR \+ 2 DiT workers need 3 device_ids"):
        choose_mode(EngineConfig(mode="processes", dit_workers=2, device_ids=(0, 1)), "Ascend")
    with pytest.raises(ValueError, match="queue_size=0 must be at least 1"):
        EngineConfig(queue_size=0).validate()
    job = BatchJobConfig.from_dict({"model": "m", "prompts": "p"})
    assert job.overlap and job.engine_config() == EngineConfig()  # the batch job overlaps by default
    with pytest.raises(ConfigError, match=r"engine mode 'fast' is not one of \('auto', 'processes', 'streams'\)"):
        BatchJobConfig.from_dict({"model": "m", "prompts": "p", "engine_mode": "fast"})


def test_prior_queue_is_bounded_and_requests_are_pulled_lazily(tmp_path):
    """With the DiT stage held on its first item, the AR stage stops queue_size + 2 items in (one held by the
    DiT stage, queue_size queued, one decoded and waiting to be queued) and the engine stops pulling requests."""
    pulled = []

    def requests():
        for i in range(10):
            pulled.append(i)
            yield _request(f"k{i}", f"hold {i}", seed=i)

    results = []
    consumer = threading.Thread(target=lambda: results.extend(run_engine(
        requests(), FakeLoader(str(tmp_path)), EngineConfig(max_ar_batch=1, queue_size=2))))
    consumer.start()
    log = tmp_path / "log"
    lines = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731
    deadline = time.monotonic() + 120
    while "dit hold 0" not in lines() and time.monotonic() < deadline:
        time.sleep(0.1)
    seen, still = -1, time.monotonic()
    while time.monotonic() - still < 3 and time.monotonic() < deadline:  # until the AR stage stops advancing
        count = sum(line.startswith("ar ") for line in lines())
        if count != seen:
            seen, still = count, time.monotonic()
        time.sleep(0.1)
    assert seen == 2 + 2, lines()
    assert len(pulled) <= seen + 2  # the engine keeps one group ahead of the AR worker, no more
    (tmp_path / "gate").touch()
    consumer.join(timeout=120)
    assert not consumer.is_alive()
    assert sorted(r.request.key for r in results) == sorted(f"k{i}" for i in range(10))
    assert all(r.error is None and np.asarray(r.images[0])[0, 0, 0] == int(r.request.key[1:]) for r in results)


def test_failing_items_are_reported_and_the_rest_finish(tmp_path):
    """NonFiniteError in the AR stage or in the DiT stage (inside a batch: retried prompt by prompt) fails that
    item only; every other item of the batch is generated. The DiT stage takes an AR batch's items of the
    same settings in one call."""
    requests = [_request("a", seed=1), _request("b", "nan-ar here", 2), _request("c", seed=3),
                _request("d", "nan-dit here", 4), _request("e", seed=5), GenerationRequest("f", "a dog", 6, 64, 64, 3, 1.5)]
    results = {r.request.key: r for r in run_engine(requests, FakeLoader(str(tmp_path)), EngineConfig(max_ar_batch=3))}
    assert sorted(results) == list("abcdef")
    assert results["b"].error.startswith("AR stage: NonFiniteError: AR prior") and not results["b"].images
    assert results["d"].error.startswith("DiT stage: NonFiniteError: denoising step 1/2")
    assert all(results[k].error is None and np.asarray(results[k].images[0])[0, 0, 0] == seed
               for k, seed in (("a", 1), ("c", 3), ("e", 5)))
    ar_calls = [line for line in (tmp_path / "log").read_text().splitlines() if line.startswith("ar ")]
    assert ar_calls[:4] == ["ar a cat nan-ar here a cat", "ar a cat", "ar nan-ar here", "ar a cat"]  # batch, then singly
    assert results["f"].error is None and np.asarray(results["f"].images[0])[0, 0, 0] == 6
    dit_calls = [line for line in (tmp_path / "log").read_text().splitlines() if line.startswith("dit ")]
    # the failed AR batch reaches the DiT stage as single items; d and e share a call (it fails: then singly),
    # f has other steps: a call of its own
    assert dit_calls == ["dit a cat", "dit a cat", "dit nan-dit here a cat", "dit nan-dit here", "dit a cat", "dit a dog"]
    with pytest.raises(EngineError, match="the (AR|DIT) stage could not start: FileNotFoundError: no model here"):
        list(run_engine(requests, FakeLoader(str(tmp_path), broken=True)))


def test_dead_worker_or_stall_fails_the_items_in_flight(tmp_path):
    """A DiT worker killed by SIGKILL, or a stage that stops answering, ends the run with every unfinished item
    reported once; no stage process is left behind."""
    start = time.monotonic()
    results = list(run_engine([_request("a", seed=1), _request("b", "die now"), _request("c")],
                              FakeLoader(str(tmp_path)), EngineConfig(max_ar_batch=1)))
    assert time.monotonic() - start < 90
    by_key = {r.request.key: r for r in results}
    assert sorted(by_key) == ["a", "b", "c"] and by_key["c"].error == by_key["b"].error
    assert by_key["b"].error == "the DIT stage worker mindglm-dit-1 ended unexpectedly (exit code -9); item not finished"
    assert by_key["a"].error in (None, by_key["b"].error)  # a result still in the killed worker's send buffer is lost
    (tmp_path / "held").mkdir()  # no gate file: the DiT stage never finishes "x"
    results = list(run_engine([_request("x", "hold"), _request("y")], FakeLoader(str(tmp_path / "held")),
                              EngineConfig(stall_timeout_s=3)))
    assert [r.error.split(";")[0] for r in results] == ["no stage finished anything for 3 s (stall_timeout_s)"] * 2
    assert _stage_workers(os.getpid()) == []


def _stage_workers(parent: int) -> list[str]:
    """Process ids of the engine's stage workers started by ``parent``."""
    found = subprocess.run(["pgrep", "-P", str(parent), "-f", "spawn_main"], capture_output=True, text=True)
    return found.stdout.split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("engine") / "tiny", progress=False)


@pytest.fixture(scope="module")
def sequential(tiny, tmp_path_factory):
    """The sequential job's output folder (overlap false, batch_size 1) and its config."""
    folder = tmp_path_factory.mktemp("sequential")
    cfg = _job(folder, tiny, overlap=False)
    assert run_batch(cfg, GlmImagePipeline.from_pretrained(tiny), progress=False)["generated"] == len(PROMPTS)
    return cfg


def _job(folder: Path, tiny, **kw) -> BatchJobConfig:
    prompts = folder / "prompts.jsonl"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    pixels = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "ref.png")  # the image-to-image item's reference (its own AR group)
    return BatchJobConfig.from_dict({"model": str(tiny), "prompts": str(prompts), "out_dir": str(folder / "out"),
                                     "height": 64, "width": 64, "steps": 2, "base_seed": 100, **kw})


def _assert_same_images(a: Path, b: Path, ids: list[str]) -> None:
    for name in ids:
        x, y = (np.asarray(Image.open(d / f"{name}.png"), np.int16) for d in (a, b))
        assert np.abs(x - y).max() <= 1, name  # AR batching may change float rounding, never more than a level
        settings = [json.loads((d / f"{name}.json").read_text())["settings"] for d in (a, b)]
        for record in settings:  # the reference image lies in each job's own folder
            record["image"] = [Path(path).name for path, _ in record["image"]]
        assert settings[0] == settings[1]


def test_overlapped_job_writes_the_sequential_images(sequential, tiny, tmp_path):
    cfg = _job(tmp_path, tiny, max_ar_batch=4)  # prompts of several lengths share AR batches; I2I goes alone
    summary = run_batch(cfg, progress=False)
    assert (summary["generated"], summary["failed"]) == (len(PROMPTS), [])
    ids = [item.id for item in read_items(cfg.prompts, cfg.base_seed)[0]]
    _assert_same_images(Path(sequential.out_dir), Path(cfg.out_dir), ids)
    assert run_batch(cfg, progress=False)["skipped"] == len(PROMPTS)  # resume semantics unchanged
    assert not list((Path(cfg.out_dir) / ".claims").glob("*.claim"))


@pytest.mark.slow
def test_overlapped_job_survives_sigkill_and_resumes(sequential, tiny, tmp_path):
    """SIGKILL the job once its first image is written: its stage workers end too; the rerun generates exactly
    the missing items, keeps the finished ones untouched, and the folder equals the sequential job's."""
    cfg = _job(tmp_path, tiny, max_ar_batch=2)
    command = [sys.executable, str(ROOT / "scripts" / "batch_generate.py"), "--model", cfg.model, "--prompts",
               cfg.prompts, "--out-dir", cfg.out_dir, "--height", "64", "--width", "64", "--steps", "2",
               "--base-seed", "100", "--max-ar-batch", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = Path(cfg.out_dir)
    deadline = time.monotonic() + 300
    while not list(out.glob("*.json")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _stage_workers(job.pid)
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = {p.stem: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert 1 <= len(done) < len(PROMPTS) and len(workers) == 2, (done, workers, job.stderr.read()[-3000:])
    for _ in range(100):  # the stage workers notice their parent is gone within a second
        if not any(Path(f"/proc/{pid}").exists() for pid in workers):
            break
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    summary = run_batch(cfg, progress=False)
    assert (summary["generated"], summary["skipped"], summary["failed"]) == (len(PROMPTS) - len(done), len(done), [])
    assert {name: (out / f"{name}.json").stat().st_mtime_ns for name in done} == done
    ids = [item.id for item in read_items(cfg.prompts, cfg.base_seed)[0]]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(ids)
    _assert_same_images(Path(sequential.out_dir), out, ids)
    assert not list((out / ".claims").glob("*.claim"))
