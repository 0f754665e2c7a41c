"""Stage-overlap generation engine: the AR stage of later prompts runs while the DiT + VAE stage decodes
earlier ones, with a bounded queue of prior tokens between them.

    requests ──► AR stage ──(bounded queue of AR batches)──► DiT + VAE stage ──► results (completion order)
                 prompts of one grid size batched             the same batch, split where settings differ

Two placements run the same stage loops (``_ar_loop`` / ``_dit_loop``):

- ``processes`` (CPU, several NPUs): AR and DiT worker processes, each loading the whole pipeline (its
  public stage API: ``generate_prior`` / ``encode_references`` for the AR stage, ``pipe(...,
  prior_token_ids=...)`` for the DiT + VAE stage; loading only one stage's weights needs the pipeline's
  internals), each pinned to its own NPU (``ASCEND_RT_VISIBLE_DEVICES``) or, on CPU, given its share of the
  cores as its kernel-thread budget. A worker that dies or a stage that stalls fails the items still in
  flight and ends the run (requests not yet pulled are left for a rerun) instead of hanging the engine;
  workers end when the engine's process dies.
- ``streams`` (one NPU): both stages as threads of this process on one loaded pipeline, each issuing its
  kernels on its own ``mindspore.runtime.Stream``. Untested: it needs an NPU and none was available.

Per-item outputs do not depend on the overlap: each prompt's AR samples come from its own row seed, and the
DiT stage draws each prompt's noise from its own seed (the pipeline's per-prompt seeds), so a prompt's images
are those of a sequential batch of one up to float rounding of the batched matrix products (at most one
uint8 level in the tests). Text-to-image prompts of one AR batch that share size, steps, guidance and image
count are denoised and decoded together (``max_dit_batch``); image-to-image prompts one at a time.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

MODES = ("auto", "processes", "streams")
#: environment of an msrun rank; a stage worker is a plain process, not another rank
_CLUSTER_ENV = ("MS_ROLE", "MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_NODE_ID", "MS_LOCAL_WORKER",
                "RANK_ID", "RANK_SIZE", "RANK_TABLE_FILE", "DEVICE_ID")


class EngineError(ValueError):
    """The engine cannot run at all: a stage failed to load its model (usually a wrong model folder, hence a
    ValueError, reported like any bad argument); per-item failures are results instead."""


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How the two stages are placed and how far the AR stage may run ahead."""

    mode: str = "auto"                  # auto (see choose_mode), processes or streams
    max_ar_batch: int = 8               # prompts of one grid size decoded together by the AR stage
    max_dit_batch: int = 8              # text-to-image prompts of one AR batch denoised together (same settings)
    queue_size: int = 2                 # AR batches waiting for the DiT stage; the AR stage blocks when full
    ar_workers: int = 1                 # AR stage processes (processes mode)
    dit_workers: int = 1                # DiT + VAE stage processes (processes mode)
    device_ids: tuple[int, ...] = ()    # NPUs of the workers, AR workers' first (processes mode on Ascend)
    stage_threads: int = 0              # CPU kernel threads per stage process (0: all cores for each)
    stall_timeout_s: float = 3600.0     # no item finished for this long: the stages count as hung

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"engine mode {self.mode!r} is not one of {MODES}")
        for name in ("max_ar_batch", "max_dit_batch", "queue_size", "ar_workers", "dit_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.stage_threads < 0 or not self.stall_timeout_s > 0:
            raise ValueError("stage_threads must be >= 0 and stall_timeout_s > 0")


def choose_mode(config: EngineConfig, device: str) -> str:
    """``processes`` on CPU and for several NPUs, ``streams`` for one NPU; an explicit mode is checked."""
    device = device.upper()
    workers = config.ar_workers + config.dit_workers
    if config.mode == "streams":
        if device == "CPU":
            raise ValueError("engine mode 'streams' needs an NPU (device streams); use 'processes' on CPU")
        return "streams"
    if config.mode == "processes" or device == "CPU":
        if device != "CPU" and len(config.device_ids) < workers:
            raise ValueError(f"{config.ar_workers} AR + {config.dit_workers} DiT workers need {workers} device_ids "
                             f"(one NPU each), got {list(config.device_ids)}; or use mode 'streams' on one NPU")
        return "processes"
    return "processes" if len(config.device_ids) >= max(workers, 2) else "streams"


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """One prompt's images; ``key`` names it in the results."""

    key: str
    prompt: str
    seed: int
    height: int
    width: int
    steps: int
    guidance_scale: float
    images: tuple[str, ...] = ()        # reference image paths (image-to-image)
    num_images: int = 1

    @property
    def grid_key(self) -> tuple[int, int, int]:
        """Requests that may share one AR batch: same size, same number of reference images."""
        return self.height, self.width, len(self.images)

    @property
    def dit_key(self) -> tuple | None:
        """Requests that may share one DiT + VAE call: text-to-image with the same settings (None: alone)."""
        return None if self.images else (self.height, self.width, self.steps, self.guidance_scale, self.num_images)


@dataclasses.dataclass
class GenerationResult:
    request: GenerationRequest
    images: list[Image.Image]           # empty when the item failed
    error: str | None                   # what failed, for the report
    timings: object | None              # the pipeline's Timings; ar_seconds is the item's share of its AR batch


@dataclasses.dataclass(frozen=True)
class PipelineLoader:
    """Loads the pipeline inside a stage worker (picklable, so a spawned process can call it)."""

    model: str
    device: str | None = None
    lora: tuple[tuple[str, float], ...] = ()

    def __call__(self, threads: int | None):
        from ..runtime import default_compute_dtype, setup_runtime
        from .glm_image_pipeline import GlmImagePipeline

        device = setup_runtime(self.device)
        if threads and device == "CPU":
            from mindspore.device_context.cpu import op_tuning

            op_tuning.threads_num(threads)  # two stages sharing the cores must not each start a pool per core
        return GlmImagePipeline.from_pretrained(self.model, dtype=default_compute_dtype(device), lora=list(self.lora))


def _runs(items: Iterable, key: Callable, limit: int) -> Iterator[list]:
    """Consecutive items of one ``key``, at most ``limit`` per run, pulled lazily; an item whose key is
    None runs alone. The AR stage's groups (``grid_key``) and the DiT stage's calls (``dit_key``)."""
    run: list = []
    for item in items:
        k = key(item)
        if run and (k is None or k != key(run[0]) or len(run) >= limit):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _prior_rows(pipe, group: list[GenerationRequest], sampling: dict) -> tuple[np.ndarray, int]:
    """AR stage of one group: its prior token rows (DiT patch grid) and the tokens generated per prompt."""
    from ..processor.image_processing import load_image

    reference_ids = grids = None
    if group[0].images:
        loaded = [[load_image(path).convert("RGB") for path in r.images] for r in group]
        reference_ids, grids, _ = pipe.encode_references(loaded)
    first = group[0]
    prior = pipe.generate_prior([r.prompt for r in group], first.height, first.width, pipe.sampling_config(**sampling),
                                reference_ids, grids, progress=False, row_seeds=[r.seed for r in group])
    return prior.prior_ids, prior.generated.shape[1]


def _ar_loop(pipe, inbox, priors, results, sampling: dict) -> None:
    """Decode groups from ``inbox`` into ``priors`` (blocking when it is full); a group that fails is
    retried prompt by prompt so only the failing prompt is reported."""
    while (group := inbox.get()) is not None:
        pending = [group]
        while pending:
            part = pending.pop()
            start = time.perf_counter()
            try:
                rows, tokens = _prior_rows(pipe, part, sampling)
            except Exception as err:  # noqa: BLE001 - any failure of one item is that item's result
                if len(part) > 1:
                    pending.extend([r] for r in reversed(part))
                else:
                    results.put(("error", part[0].key, f"AR stage: {_describe(err)}"))
                continue
            share = (time.perf_counter() - start) / len(part)
            priors.put([(request, row, share, tokens) for request, row in zip(part, rows)])
        results.put(("ar_done", None))


def _dit_loop(pipe, priors, results, max_batch: int) -> None:
    """Denoise and decode the prompts of each AR batch from their priors, one run of ``dit_key`` per pipeline call;
    a call that fails is retried prompt by prompt so only the failing prompt is reported."""
    while (tasks := priors.get()) is not None:
        pending = list(_runs(tasks, lambda task: task[0].dit_key, max_batch))[::-1]
        while pending:
            batch = pending.pop()
            request = batch[0][0]
            try:
                out = pipe([r.prompt for r, *_ in batch], image=list(request.images) or None, height=request.height,
                           width=request.width, num_inference_steps=request.steps,
                           guidance_scale=request.guidance_scale, seed=[r.seed for r, *_ in batch],
                           prior_token_ids=np.stack([np.asarray(row) for _, row, *_ in batch]),
                           num_images_per_prompt=request.num_images, progress=False)
            except Exception as err:  # noqa: BLE001 - any failure of one item is that item's result
                if len(batch) > 1:
                    pending.extend([task] for task in reversed(batch))
                else:
                    results.put(("error", request.key, f"DiT stage: {_describe(err)}"))
                continue
            n = request.num_images
            for i, (item, _, ar_seconds, tokens) in enumerate(batch):  # the call's timings are shared by its prompts
                timings = dataclasses.replace(out.timings, ar_seconds=ar_seconds, ar_tokens=tokens)
                results.put(("done", item.key, [np.asarray(image) for image in out.images[i * n:(i + 1) * n]], timings))


def _exit_with_parent(parent: int) -> None:
    """A stage process ends when the engine's process is gone (even SIGKILLed): nothing else would stop it."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _process_worker(stage: str, loader: Callable, parent: int, device_id: int | None, threads: int,
                    inbox, priors, results, sampling: dict, dit_batch: int) -> None:
    """Entry of a stage process: placement first (before MindSpore is imported), then the stage loop."""
    _exit_with_parent(parent)
    for name in _CLUSTER_ENV:
        os.environ.pop(name, None)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if device_id is not None:  # the worker sees one NPU, as its device 0
        visible = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
        os.environ["ASCEND_RT_VISIBLE_DEVICES"] = str(visible.split(",")[device_id] if visible else device_id)
    try:
        pipe = loader(threads)
    except Exception as err:  # noqa: BLE001 - reported to the engine, which stops
        results.put(("fatal", stage, _describe(err)))
        return
    if stage == "ar":
        _ar_loop(pipe, inbox, priors, results, sampling)
    else:
        _dit_loop(pipe, priors, results, dit_batch)


class _Workers:
    """The running stages: process or thread handles, the three queues, and how to stop them."""

    def __init__(self, mode: str, config: EngineConfig, loader: Callable, sampling: dict):
        self.mode = mode
        self.handles: list[tuple[str, object]] = []
        if mode == "processes":
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # MindSpore's runtime threads do not survive fork
            self.inbox, self.priors, self.results = ctx.Queue(), ctx.Queue(config.queue_size), ctx.Queue()
            # every core for each worker by default: a stage waiting on its queue holds none (the AR stage waits
            # while the DiT stage works through a batch), and an even split left those cores idle; while both
            # stages run, the OS shares the cores (README, Throughput: mid size +15% and +19% over the even split
            # in two runs, tiny +4% and +6%)
            threads = config.stage_threads or os.cpu_count() or 1
            ids = list(config.device_ids) or [None] * (config.ar_workers + config.dit_workers)
            stages = ["ar"] * config.ar_workers + ["dit"] * config.dit_workers
            for index, stage in enumerate(stages):
                process = ctx.Process(target=_process_worker, name=f"mindglm-{stage}-{index}", daemon=True,
                                      args=(stage, loader, os.getpid(), ids[index], threads, self.inbox, self.priors,
                                            self.results, sampling, config.max_dit_batch))
                process.start()
                self.handles.append((stage, process))
        else:
            self.inbox, self.priors, self.results = queue.Queue(), queue.Queue(config.queue_size), queue.Queue()
            self._start_stream_threads(loader, sampling, config.max_dit_batch)

    def _start_stream_threads(self, loader: Callable, sampling: dict, dit_batch: int) -> None:
        """One NPU: both stages share one pipeline, each on its own device stream. Graph cells are not
        re-entrant, and both stages use the vision encoder for reference images (the AR stage to encode them,
        the DiT stage again inside ``pipe``), so image-to-image calls take one lock around it."""
        import mindspore as ms

        pipe = loader(None)
        lock = threading.Lock()
        encode = pipe.encode_references

        def locked_encode(images):
            with lock:
                return encode(images)

        pipe.encode_references = locked_encode

        def run(stage: str) -> None:
            with ms.runtime.StreamCtx(ms.runtime.Stream()):
                if stage == "ar":
                    _ar_loop(pipe, self.inbox, self.priors, self.results, sampling)
                else:
                    _dit_loop(pipe, self.priors, self.results, dit_batch)

        for stage in ("ar", "dit"):
            thread = threading.Thread(target=run, args=(stage,), name=f"mindglm-{stage}-stream", daemon=True)
            thread.start()
            self.handles.append((stage, thread))

    def dead(self) -> str | None:
        """A description of a stage worker that ended while it should be running, else None."""
        for stage, handle in self.handles:
            if not handle.is_alive():
                code = getattr(handle, "exitcode", None)
                return f"the {stage.upper()} stage worker {handle.name} ended unexpectedly" + (
                    f" (exit code {code})" if code is not None else "")
        return None

    def count(self, stage: str) -> int:
        return sum(s == stage for s, _ in self.handles)

    def stop(self, clean: bool) -> None:
        """``clean``: every item is finished; tell each worker to end and wait. Otherwise end them now."""
        if clean:
            for stage, _ in self.handles:
                (self.inbox if stage == "ar" else self.priors).put(None)
        for _, handle in self.handles:
            if self.mode == "processes":
                handle.join(timeout=30 if clean else 0)
                if handle.is_alive():
                    handle.kill()
                    handle.join(timeout=10)
        if self.mode == "processes":
            for q in (self.inbox, self.priors, self.results):
                q.cancel_join_thread()  # a dead reader must not keep this process from exiting
                q.close()


def run_engine(requests: Iterable[GenerationRequest], loader: Callable, config: EngineConfig = EngineConfig(),
               device: str | None = None, sampling: dict | None = None) -> Iterator[GenerationResult]:
    """Generate every request with the AR and DiT stages overlapped; yields one result per request in
    completion order. ``requests`` is pulled lazily (a group only when the AR stage is ready for it), so a
    caller may claim items as they are pulled. ``loader(threads)`` returns a pipeline in a worker; ``device``
    as ``setup_runtime`` reads it (None: ``$MINDGLM_DEVICE``, else CPU); ``sampling`` holds overrides of the
    checkpoint's sampling config (``pipe.sampling_config``)."""
    config.validate()
    mode = choose_mode(config, device or os.environ.get("MINDGLM_DEVICE", "CPU"))
    groups = _runs(iter(requests), lambda request: request.grid_key, config.max_ar_batch)
    first = next(groups, None)
    if first is None:  # nothing to do (a resumed job that is complete): no worker is started
        return
    groups = itertools.chain([first], groups)
    workers = _Workers(mode, config, loader, dict(sampling or {}))
    by_key: dict[str, GenerationRequest] = {}
    ar_in_flight, exhausted, clean = 0, False, False
    last_progress = time.monotonic()
    try:
        while True:
            while not exhausted and ar_in_flight <= workers.count("ar"):  # keep each AR worker one group ahead
                group = next(groups, None)
                if group is None:
                    exhausted = True
                    break
                by_key.update((r.key, r) for r in group)
                workers.inbox.put(group)
                ar_in_flight += 1
            if exhausted and not by_key:
                clean = True
                return
            try:
                message = workers.results.get(timeout=0.5)
            except queue.Empty:
                problem = workers.dead()
                if problem is None and time.monotonic() - last_progress > config.stall_timeout_s:
                    problem = f"no stage finished anything for {config.stall_timeout_s:.0f} s (stall_timeout_s)"
                if problem is None:
                    continue
                try:  # what the stages sent before one of them ended still counts
                    message = workers.results.get(timeout=2.0)
                except queue.Empty:
                    for request in by_key.values():
                        yield GenerationResult(request, [], f"{problem}; item not finished", None)
                    by_key.clear()
                    return
            last_progress = time.monotonic()
            kind, key, *rest = message
            if kind == "fatal":
                raise EngineError(f"the {key.upper()} stage could not start: {rest[0]}")
            if kind == "ar_done":
                ar_in_flight -= 1
            elif kind == "error":
                yield GenerationResult(by_key.pop(key), [], rest[0], None)
            else:
                images, timings = rest
                yield GenerationResult(by_key.pop(key), [Image.fromarray(a) for a in images], None, timings)
    finally:
        workers.stop(clean)


def ordered_results(results: Iterable[GenerationResult], keys: Sequence[str]) -> list[GenerationResult]:
    """Results in the order of ``keys`` (the engine yields them as they finish)."""
    found = {r.request.key: r for r in results}
    return [found[k] for k in keys]

