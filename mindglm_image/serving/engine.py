"""The generation engine behind the server: a bounded queue and one worker thread that owns MindSpore.

MindSpore graphs must be called from one thread only (two threads calling graphs hang), so the worker
thread sets up the runtime, loads the pipeline and runs every call; HTTP handlers only enqueue a ``Job``
and wait on its future. Requests with the same ``batch_key`` that are waiting when the worker becomes
free run in one pipeline call (each with its own seed, so its tokens and noise do not depend on the batch).
A job whose client went away or whose timeout passed is removed from the queue before it runs; one already
running finishes and its result is discarded. On shutdown the queue keeps draining for ``shutdown_grace_s``,
then every job still queued fails with ``EngineStopped``: no accepted request is left without an answer.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from .metrics import ServerMetrics
from .schemas import ImageRequest, parse_size
from .settings import ServerConfig

log = logging.getLogger("mindglm_image.serving")


class QueueFull(Exception):
    """The queue holds ``queue_size`` jobs; the client should retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"the generation queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class EngineStopped(Exception):
    """The engine is not generating (model still loading, load failed, or shutting down)."""


class JobCancelled(Exception):
    """The job left the queue unrun: its client disconnected or its timeout passed."""


@dataclasses.dataclass
class JobResult:
    images: list[Image.Image]
    queue_seconds: float
    batch_images: int


@dataclasses.dataclass(eq=False)
class Job:
    request: ImageRequest
    enqueued: float = dataclasses.field(default_factory=time.monotonic)
    future: concurrent.futures.Future = dataclasses.field(default_factory=concurrent.futures.Future)
    cancelled: bool = False

    def settle(self, result: JobResult | None = None, error: BaseException | None = None) -> None:
        """Set the outcome once (a job cancelled meanwhile keeps its first outcome)."""
        try:
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)
        except concurrent.futures.InvalidStateError:  # settled first by the other thread
            pass


class GenerationEngine:
    """Owns the pipeline; ``submit`` from any thread, results through each job's future."""

    def __init__(self, cfg: ServerConfig, metrics: ServerMetrics, load_pipeline: Callable[[], object],
                 on_fatal: Callable[[BaseException], None] | None = None):
        self.cfg, self.metrics, self._load_pipeline, self._on_fatal = cfg, metrics, load_pipeline, on_fatal
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="mindglm-generation", daemon=True)
        self.state = "loading"            # loading -> ready -> stopping -> stopped, or failed
        self.error: str | None = None
        self._drain_until = math.inf
        self._batch_seconds_per_image = 1.0  # running estimate, for Retry-After

    def start(self) -> None:
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def submit(self, request: ImageRequest) -> Job:
        with self._cond:
            if self.state != "ready":
                raise EngineStopped(self.error or f"the server is {self.state}; retry later")
            if len(self._queue) >= self.cfg.queue_size:
                waiting = sum(j.request.n for j in self._queue) + self.cfg.max_batch_images
                raise QueueFull(max(1, math.ceil(waiting * self._batch_seconds_per_image)))
            job = Job(request)
            self._queue.append(job)
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()
        return job

    def cancel(self, job: Job, reason: str) -> None:
        """Drop ``job`` (``reason``: disconnect or timeout): unqueued at once, or its running result discarded."""
        with self._cond:
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
                self.metrics.queue_depth.set(len(self._queue))
            if not job.future.done():
                self.metrics.dropped.labels(reason).inc()
        job.settle(error=JobCancelled(reason))

    def begin_shutdown(self) -> None:
        """Stop accepting; queued jobs still run for ``shutdown_grace_s``, then the rest fail (non-blocking)."""
        with self._cond:
            if self.state in ("ready", "loading"):
                self.state = "stopping"
                self._drain_until = time.monotonic() + self.cfg.shutdown_grace_s
            self._cond.notify_all()

    def shutdown(self, timeout: float | None = None) -> None:
        """``begin_shutdown`` and wait for the worker to answer every job and stop."""
        self.begin_shutdown()
        self._thread.join(timeout)

    # -- worker thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            pipe = self._load_pipeline()
            if self.cfg.warmup:
                self._warm_up(pipe)
        except BaseException as err:  # noqa: BLE001 - any load failure makes the server unusable; report it
            log.error("loading the model failed: %s", err)
            with self._cond:
                self.state, self.error = "failed", f"the model could not be loaded: {err}"
                self._fail_queued(EngineStopped(self.error))
            if self._on_fatal:
                self._on_fatal(err)
            return
        with self._cond:
            if self.state == "loading":
                self.state = "ready"
        log.info("model loaded; ready")
        while True:
            with self._cond:
                while not self._queue and self.state == "ready":
                    self._cond.wait()
                if self.state != "ready" and (not self._queue or time.monotonic() > self._drain_until):
                    self._fail_queued(EngineStopped("the server is shutting down; retry on another instance"))
                    self.state = "stopped"
                    return
                batch = self._take_batch()
            self._generate(pipe, batch)

    def _warm_up(self, pipe) -> None:
        """Compile the graphs of every batch size at the default size (graph shapes depend on both)."""
        height, width = parse_size(self.cfg.default_size, self.cfg)
        for batch in range(1, self.cfg.max_batch_images + 1):
            start = time.monotonic()
            pipe(["warm-up"] * batch, height=height, width=width, num_inference_steps=1, seed=list(range(batch)),
                 progress=False)
            log.info("warm-up: batch of %d at %dx%d in %.1f s", batch, width, height, time.monotonic() - start)

    def _take_batch(self) -> list[Job]:
        """The oldest job plus queued jobs of the same batch key, up to ``max_batch_images`` images."""
        first = self._queue.popleft()
        batch, images = [first], first.request.n
        key = first.request.batch_key
        if key is not None:
            for job in list(self._queue):
                if job.request.batch_key == key and images + job.request.n <= self.cfg.max_batch_images:
                    self._queue.remove(job)
                    batch.append(job)
                    images += job.request.n
        self.metrics.queue_depth.set(len(self._queue))
        return batch

    def _fail_queued(self, error: BaseException) -> None:
        while self._queue:
            self._queue.popleft().settle(error=error)
            self.metrics.dropped.labels("shutdown").inc()
        self.metrics.queue_depth.set(0)

    def _generate(self, pipe, batch: list[Job]) -> None:
        jobs = [j for j in batch if not j.cancelled]
        if not jobs:
            return
        req = jobs[0].request
        start = time.monotonic()
        waits = [start - j.enqueued for j in jobs]
        for wait in waits:
            self.metrics.stage_seconds.labels("queue").observe(wait)
        self.metrics.running.set(len(jobs))
        try:
            seeds = [j.request.seed for j in jobs]
            out = pipe([j.request.prompt for j in jobs], image=list(req.images) or None, height=req.height,
                       width=req.width, num_inference_steps=req.steps, guidance_scale=req.guidance_scale, seed=seeds,
                       sampling=pipe.sampling_config(seed=seeds[0], temperature=req.temperature, top_p=req.top_p),
                       num_images_per_prompt=req.n, progress=False)
            if not np.isfinite(out.pixels).all():
                raise FloatingPointError("the generated pixels are not finite (NaN/Inf); nothing was returned")
        except Exception as err:  # noqa: BLE001 - a failed batch fails its requests, the server goes on
            log.exception("generation failed")
            for job in jobs:
                job.settle(error=err)
            return
        finally:
            self.metrics.running.set(0)
        seconds = time.monotonic() - start
        images = len(jobs) * req.n
        self._batch_seconds_per_image = seconds / images
        for stage, value in (("ar", out.timings.ar_seconds), ("denoise", out.timings.denoise_seconds),
                             ("decode", out.timings.decode_seconds), ("total", seconds)):
            self.metrics.stage_seconds.labels(stage).observe(value)
        self.metrics.batch_images.observe(images)
        self.metrics.images_per_second.set(images / seconds)
        for i, (job, wait) in enumerate(zip(jobs, waits)):
            job.settle(JobResult(out.images[i * req.n:(i + 1) * req.n], wait, images))
