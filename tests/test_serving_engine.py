"""The server's generation engine on a recording stand-in pipeline: what is batched together, what a cancel,
a timeout or a shutdown does to queued jobs (the real pipeline behind real HTTP is in tests/test_serve.py)."""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest
from PIL import Image

from mindglm_image.pipeline.glm_image_pipeline import PipelineOutput, Timings
from mindglm_image.serving.app import create_app
from mindglm_image.serving.engine import EngineStopped, GenerationEngine, JobCancelled, QueueFull
from mindglm_image.serving.metrics import ServerMetrics
from mindglm_image.serving.schemas import parse_request
from mindglm_image.serving.settings import ServerConfig


class RecordingPipeline:
    """Records each call; the first call waits for ``release`` so jobs can pile up in the queue."""

    def __init__(self):
        self.calls: list[tuple[list[str], list[int], int]] = []
        self.running, self.release = threading.Event(), threading.Event()

    def sampling_config(self, **overrides):
        return overrides

    def __call__(self, prompts, *, seed, num_images_per_prompt, height, width, **_):
        self.calls.append((list(prompts), list(seed), num_images_per_prompt))
        self.running.set()
        self.release.wait(10)
        count = len(prompts) * num_images_per_prompt
        pixels = np.full((count, height, width, 3), 0.5, np.float32)
        return PipelineOutput([Image.new("RGB", (width, height)) for _ in range(count)], pixels, None, Timings())


@pytest.fixture
def engine():
    cfg = ServerConfig(model="unused", queue_size=4, max_batch_images=3, max_n=3, min_side=32, default_size="64x64",
                       shutdown_grace_s=0.0)
    pipe = RecordingPipeline()
    eng = GenerationEngine(cfg, ServerMetrics(), lambda: pipe)
    eng.start()
    while not eng.ready:
        threading.Event().wait(0.01)
    eng.pipe, eng.request = pipe, (lambda **v: parse_request({"prompt": "p", **v}, cfg))
    yield eng
    pipe.release.set()
    eng.shutdown(10)


def test_equal_requests_share_a_batch_up_to_the_image_limit(engine):
    first = engine.submit(engine.request(prompt="first", seed=1))
    engine.pipe.running.wait(10)
    jobs = [engine.submit(engine.request(prompt=f"same{i}", seed=10 + i)) for i in range(3)]
    other = engine.submit(engine.request(prompt="other size", size="96x64", seed=20))
    with pytest.raises(QueueFull) as full:
        engine.submit(engine.request(prompt="one too many"))
    assert full.value.retry_after >= 1
    engine.pipe.release.set()
    results = [j.future.result(10) for j in (first, *jobs, other)]
    assert engine.pipe.calls == [(["first"], [1], 1), (["same0", "same1", "same2"], [10, 11, 12], 1),
                                 (["other size"], [20], 1)]
    assert [len(r.images) for r in results] == [1, 1, 1, 1, 1] and results[1].batch_images == 3
    assert results[4].images[0].size == (96, 64)


def test_n_images_count_against_the_batch_limit(engine):
    engine.submit(engine.request(prompt="first"))
    engine.pipe.running.wait(10)
    two = [engine.submit(engine.request(prompt=f"n2-{i}", n=2, seed=i)) for i in range(2)]
    engine.pipe.release.set()
    assert [len(j.future.result(10).images) for j in two] == [2, 2]
    assert [c[0] for c in engine.pipe.calls[1:]] == [["n2-0"], ["n2-1"]]  # 2 + 2 > 3 images


def test_cancelled_job_leaves_the_queue_and_shutdown_fails_the_rest(engine):
    running = engine.submit(engine.request(prompt="running"))
    engine.pipe.running.wait(10)
    gone, waiting = (engine.submit(engine.request(prompt=p, num_inference_steps=s)) for p, s in (("gone", 3), ("waiting", 4)))
    engine.cancel(gone, "disconnect")
    with pytest.raises(JobCancelled):
        gone.future.result(1)
    assert engine.metrics.registry.get_sample_value("mindglm_queue_depth") == 1
    engine.begin_shutdown()
    with pytest.raises(EngineStopped):
        engine.submit(engine.request(prompt="late"))
    engine.pipe.release.set()
    assert len(running.future.result(10).images) == 1              # the running batch finishes
    with pytest.raises(EngineStopped):                               # grace 0: the queued one is failed
        waiting.future.result(10)
    assert [c[0] for c in engine.pipe.calls] == [["running"]]


def test_request_timeout_gives_504_and_leaves_the_queue(tmp_path):
    """Through the app's ASGI interface (the client stays connected; the worker is busy past the timeout)."""
    cfg = ServerConfig(model="unused", min_side=32, default_size="64x64", request_timeout_s=0.3,
                       output_dir=str(tmp_path))
    pipe = RecordingPipeline()
    app = create_app(cfg, load=lambda: pipe)
    engine = app.state.engine
    engine.start()
    busy = engine.submit(parse_request({"prompt": "busy"}, cfg))
    pipe.running.wait(10)
    messages = []

    async def receive():
        if not messages:
            messages.append("sent")
            return {"type": "http.request", "body": json.dumps({"prompt": "late"}).encode(), "more_body": False}
        await asyncio.Event().wait()  # connected, silent

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/images/generations", "raw_path": b"/v1/images/generations",
             "query_string": b"", "headers": [(b"content-type", b"application/json")], "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    error = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))["error"]
    assert sent[0]["status"] == 504 and error["code"] == "timeout" and error["type"] == "server_error"
    assert engine.metrics.registry.get_sample_value("mindglm_queue_depth") == 0
    assert engine.metrics.registry.get_sample_value("mindglm_requests_dropped_total", {"reason": "timeout"}) == 1
    pipe.release.set()
    assert len(busy.future.result(10).images) == 1
    engine.shutdown(10)
