"""Batch generation job: prompt files, sharding by rank, resumability, and a real msrun run on CPU.

The in-process tests run the sequential path (``overlap: false``) on a loaded pipeline; the msrun run uses
the default, the stage-overlap engine (tests/test_generation_engine.py tests it in depth)."""
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

from mindglm_image.config.base import ConfigError
from mindglm_image.jobs.batch_generate import BatchJobConfig, Claims, read_items, run_batch
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
                                     "height": 64, "width": 64, "steps": 2, "base_seed": 100, "overlap": False, **kw})


def test_item_identities_do_not_depend_on_line_numbers(tmp_path):
    """Regression (issue 13, defect 4): ids and seeds came from line numbers and shifted when lines moved."""
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(PROMPTS) + "\n\n")
    items, problems = read_items(path, base_seed=100)
    assert problems == [] and [i.id for i in items][0::2] == ["sign", "bird"] and items[1].seed == 7
    path.write_text("\n".join(['{"prompt": "a new first line"}', PROMPTS[2], PROMPTS[1], PROMPTS[0]]) + "\n")
    moved, _ = read_items(path, base_seed=100)
    assert {(i.id, i.prompt, i.seed) for i in moved} >= {(i.id, i.prompt, i.seed) for i in items}
    assert items[0].seed != items[2].seed and items[0].id != "000000"
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\nfirst prompt\n")  # a repeated line is the same item
    got, problems = read_items(txt)
    assert [i.prompt for i in got] == ["first prompt", "second prompt"] and problems == []
    assert read_items(txt, base_seed=1)[0][0].seed != got[0].seed and read_items(txt, base_seed=1)[0][0].id == got[0].id


def test_bad_items_are_reported_and_skipped(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    lines = ['{"prompt": "fine", "image": "ok.png"}', "{oops", '{"text": "a"}', '{"id": "x", "prompt": "a"}',
             '{"id": "x", "prompt": "b"}', '{"id": "../x", "prompt": "a"}', '{"prompt": "a", "seed": "7"}',
             '{"prompt": "a", "seed": -1}', '{"prompt": "a", "image": "missing.png"}', '{"prompt": "a", "image": "broken.png"}',
             '{"prompt": "a", "guidance": 3}', '{"prompt": "  "}']
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines))
    items, problems = read_items(path)
    assert [(i.prompt, i.images) for i in items] == [("fine", (str(tmp_path / "ok.png"),)), ("a", ())]
    expected = ["p.jsonl:2: not valid JSON", "p.jsonl:3: needs a JSON object with a 'prompt' string",
                "p.jsonl:5: id 'x' was already used on line 4", "p.jsonl:6: id '../x' is not a plain file name",
                "p.jsonl:7: seed '7' must be an integer", "p.jsonl:8: seed -1 must be an integer",
                "p.jsonl:9: reference image " + str(tmp_path / "missing.png") + " cannot be read",
                "p.jsonl:10: reference image " + str(tmp_path / "broken.png") + " cannot be read",
                "p.jsonl:11: unknown field(s) ['guidance']", "p.jsonl:12: the prompt is empty"]
    assert len(problems) == len(expected) and all(e in p and p.endswith("line skipped") for e, p in zip(expected, problems)), problems
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        read_items(tmp_path / "missing.jsonl")


def test_job_settings_are_validated(tmp_path):
    for bad, message in [({"steps": 0}, "steps=0 must be at least 1"), ({"height": 100}, "height=100 is not a multiple"),
                         ({"guidance_scale": float("nan")}, "guidance_scale=nan must be a finite"),
                         ({"stepz": 3}, r"unknown job setting\(s\) \['stepz'\]")]:
        with pytest.raises(ConfigError, match=message):
            BatchJobConfig.from_dict({"model": "m", "prompts": "p", **bad})


def test_run_resume_and_shard(pipe, tiny, tmp_path):
    cfg = _job(tmp_path, tiny)
    lake = read_items(cfg.prompts, cfg.base_seed)[0][1].id
    summary = run_batch(cfg, pipe, progress=False)
    assert (summary["generated"], summary["skipped"], summary["failed"]) == (3, 0, [])
    out = Path(cfg.out_dir)
    meta = json.loads((out / f"{lake}.json").read_text())
    assert meta["settings"]["seed"] == 7 and meta["settings"]["prompt"] == "a lake"
    assert np.asarray(Image.open(out / f"{lake}.png")).shape == (64, 64, 3)
    before = (out / "sign.png").stat().st_mtime_ns
    (out / "bird.json").unlink()  # as if the job was killed between the image and its record
    assert run_batch(cfg, pipe, progress=False)["generated"] == 1
    assert (out / "sign.png").stat().st_mtime_ns == before
    shard = [_job(tmp_path, tiny, out="sharded") for _ in range(2)]
    summaries = [run_batch(shard[r], pipe, rank=r, world=2, progress=False) for r in range(2)]
    assert [s["assigned"] for s in summaries] == [2, 1]
    for name in ("sign", lake, "bird"):  # batch_size 1: the sharded images equal the single-worker ones
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"{name}.png")),
                                      np.asarray(Image.open(tmp_path / "sharded" / f"{name}.png")))
    assert not list((out / ".claims").glob("*.claim"))


def test_rerun_with_other_settings_regenerates(pipe, tiny, tmp_path):
    """Regression (issue 13, defect 4): a rerun with other settings kept the old images as done."""
    cfg = _job(tmp_path, tiny)
    assert run_batch(cfg, pipe, progress=False)["generated"] == 3
    assert run_batch(cfg, pipe, progress=False)["skipped"] == 3
    other = _job(tmp_path, tiny, steps=1)
    assert run_batch(other, pipe, progress=False)["generated"] == 3
    assert {json.loads(p.read_text())["settings"]["steps"] for p in Path(cfg.out_dir).glob("*.json")} == {1}


def test_claimed_items_are_left_to_their_owner(pipe, tiny, tmp_path):
    """Regression (issue 13, defect 4): two runs on one folder both computed every item; now each item is
    claimed first. A live process's claim is respected, a dead process's claim is taken over."""
    cfg = _job(tmp_path, tiny)
    claims = Claims(Path(cfg.out_dir), cfg.stale_claim_seconds)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    (claims.folder / "sign.claim").write_text(json.dumps({"host": host, "pid": os.getppid()}))   # alive
    (claims.folder / "bird.claim").write_text(json.dumps({"host": host, "pid": int(dead.stdout)}))  # gone
    summary = run_batch(cfg, pipe, progress=False)
    assert (summary["generated"], summary["claimed_elsewhere"]) == (2, 1)
    assert not (Path(cfg.out_dir) / "sign.png").exists() and (Path(cfg.out_dir) / "bird.png").is_file()
    assert (claims.folder / "sign.claim").is_file() and not (claims.folder / "bird.claim").exists()
    far = claims.folder / "far.claim"
    far.write_text(json.dumps({"host": "another-host", "pid": 1}))
    assert not claims.acquire("far")
    os.utime(far, (0, 0))  # older than stale_claim_seconds
    assert claims.acquire("far") and not claims.acquire("far")


def test_an_item_failing_at_run_time_is_skipped(pipe, tiny, tmp_path):
    cfg = _job(tmp_path, tiny, batch_size=2)
    Image.new("RGB", (64, 64), "red").save(tmp_path / "ref.png")
    (tmp_path / "prompts.jsonl").write_text("\n".join([*PROMPTS, '{"id": "edit", "prompt": "blue", "image": "ref.png"}']))
    items, _ = read_items(cfg.prompts, cfg.base_seed)
    (tmp_path / "ref.png").write_bytes(b"gone bad after the check")
    summary = run_batch(cfg, pipe, progress=False, items=items)
    assert (summary["generated"], summary["failed"]) == (3, ["edit"])
    assert not list((Path(cfg.out_dir) / ".claims").glob("*.claim"))


def test_script_prints_errors_not_tracebacks(tmp_path, capsys):
    from importlib import util

    spec = util.spec_from_file_location("batch_script", ROOT / "scripts" / "batch_generate.py")
    script = util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "p.jsonl").write_text("{oops\n")
    for args, message in [(["--config", str(tmp_path / "none.json")], "none.json"),
                          (["--model", "m", "--prompts", str(tmp_path / "p.jsonl"), "--steps", "0"], "steps=0"),
                          (["--model", str(tmp_path / "no-model"), "--prompts", str(tmp_path / "p.jsonl")],
                           "no usable item")]:
        assert script.main(args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


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
    ids = [item.id for item in read_items(cfg.prompts, 100)[0]]
    assert sorted(p.name for p in Path(cfg.out_dir).glob("*.png")) == sorted(f"{i}.png" for i in ids)
