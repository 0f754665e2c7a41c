"""Batch generation over a prompts file, sharded across ``msrun`` workers, resumable and safe to run twice.

Identity: an item's id is its explicit ``id``, else a content hash of its prompt, reference images and
explicit seed; its seed is its explicit ``seed``, else derived from ``base_seed`` and that hash. So editing,
reordering or inserting lines never shifts another item's id or seed.

Done: ``<id>.png`` plus ``<id>.json`` whose ``settings`` (prompt, seed, reference images, model, size,
steps, guidance) equal this run's. Both are written atomically, the record last, so a killed job loses
nothing finished and a rerun with other settings regenerates instead of keeping stale images.

Claims: before computing an item a worker creates ``.claims/<id>.claim`` (``O_EXCL``, holding its host and
pid) in the output folder, so two runs on one folder never compute the same item; a claim whose process is
gone (same host) or older than ``stale_claim_seconds`` (another host) is taken over.

Bad items: lines that do not parse or hold wrong fields are reported before the model loads and skipped; an
item whose generation fails is reported and skipped; neither stops the rank.

Batch invariance: an image depends on its item only, whatever ``batch_size`` and batch-mates: the pipeline
draws each item's noise and AR samples from its own seed and masks the zero padding of a batch's glyph
embeddings in the DiT (the reference attends to it), so rebatching or resharding gives the same images
(up to float rounding of batched matmuls, ~1e-6).

Overlap (``overlap: true``, the default): items go through the stage-overlap engine (``pipeline/engine.py``):
the AR stage decodes up to ``max_ar_batch`` items of one grid size together while the DiT + VAE stage works
on earlier AR batches (their text-to-image items of the same settings together, up to ``max_dit_batch``);
same images, same records, same claims and resume as without it. Items are
claimed as the engine pulls them, so two runs on one folder still share the work.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..atomic import fingerprint, save_image_atomic, write_json_atomic
from ..config.base import ConfigError, HFConfig

#: largest seed (numpy's default_rng takes any non-negative int; the reference's torch generator 2**64-1)
MAX_SEED = 2**63 - 1
_ITEM_KEYS = {"id", "prompt", "seed", "image"}


@dataclasses.dataclass
class BatchJobConfig(HFConfig):
    """A batch job (``configs/jobs/*.json``); command-line flags override its fields."""

    model: str = ""                     # model folder (official or converted layout)
    prompts: str = ""                   # .jsonl (objects with prompt and optional id, seed, image) or text
    out_dir: str = "outputs"            # <id>.png + <id>.json per item, claims in .claims/
    height: int = 1024                  # pixels, a multiple of 32
    width: int = 1024                   # pixels, a multiple of 32
    steps: int = 50                     # denoising steps
    guidance_scale: float = 1.5         # classifier-free guidance (1 disables it)
    base_seed: int = 0                  # seeds of items without one derive from it and the item's content
    batch_size: int = 1                 # text-to-image items generated together (overlap false)
    overlap: bool = True                # AR and DiT + VAE stages run concurrently (pipeline/engine.py)
    max_ar_batch: int = 8               # overlap: items of one grid size decoded together by the AR stage
    max_dit_batch: int = 8              # overlap: text-to-image items of one AR batch denoised together
    prior_queue: int = 2                # overlap: AR batches waiting for the DiT stage (the AR stage blocks when full)
    engine_mode: str = "auto"           # overlap: processes (CPU, several NPUs), streams (one NPU) or auto
    ar_workers: int = 1                 # overlap, processes: AR stage processes (one NPU each on Ascend)
    dit_workers: int = 1                # overlap, processes: DiT + VAE stage processes (one NPU each on Ascend)
    device_ids: list = dataclasses.field(default_factory=list)  # overlap, processes on NPUs: AR workers' first
    device: str | None = None           # CPU or Ascend (default: $MINDGLM_DEVICE or CPU)
    stale_claim_seconds: float = 6 * 3600.0  # a claim of another host this old is taken over

    def validate(self) -> None:
        from ..pipeline.glm_image_pipeline import SizeLimits

        if self.extra:
            raise ConfigError(f"unknown job setting(s) {sorted(self.extra)}; known: "
                              f"{[f.name for f in dataclasses.fields(self) if f.name != 'extra']}")
        for name in ("batch_size", "max_ar_batch", "max_dit_batch", "prior_queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        try:
            self.engine_config().validate()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be at least 1")
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise ConfigError(f"guidance_scale={self.guidance_scale} must be a finite number >= 0")
        if not 0 <= self.base_seed <= MAX_SEED:
            raise ConfigError(f"base_seed={self.base_seed} must be between 0 and {MAX_SEED}")
        try:
            SizeLimits().check(self.height, self.width)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        for name in ("model", "prompts"):
            if not getattr(self, name):
                raise ConfigError(f"the job needs '{name}' (set it in the job config or pass --{name.replace('_', '-')})")

    def engine_config(self):
        """The stage-overlap engine's settings of this job."""
        from ..pipeline.engine import EngineConfig

        return EngineConfig(mode=self.engine_mode, max_ar_batch=self.max_ar_batch, max_dit_batch=self.max_dit_batch,
                            queue_size=self.prior_queue,
                            ar_workers=self.ar_workers, dit_workers=self.dit_workers, device_ids=tuple(self.device_ids))


@dataclasses.dataclass(frozen=True)
class JobItem:
    id: str
    prompt: str
    seed: int
    images: tuple[str, ...] = ()
    line: int = 0  # 1-based line in the prompts file, for messages


def _content_hash(record: dict) -> str:
    key = {"prompt": record["prompt"], "image": record["image"], "seed": record.get("seed")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _check_record(record, base: Path) -> dict:
    """The item's fields, normalised; ValueError naming the field otherwise."""
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise ValueError("needs a JSON object with a 'prompt' string")
    unknown = sorted(set(record) - _ITEM_KEYS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; an item has {sorted(_ITEM_KEYS)}")
    if not record["prompt"].strip():
        raise ValueError("the prompt is empty")
    item_id = record.get("id")
    if item_id is not None and (not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or not str(item_id)
                                or "/" in str(item_id) or "\\" in str(item_id) or str(item_id).startswith(".")):
        raise ValueError(f"id {item_id!r} is not a plain file name")
    seed = record.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed {seed!r} must be an integer between 0 and {MAX_SEED}")
    images = record.get("image") or []
    images = [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise ValueError("'image' must be a path or a list of paths")
    images = [str(p if (p := Path(i)).is_absolute() else base / p) for i in images]
    for path in images:
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, UnidentifiedImageError, SyntaxError) as err:  # PIL reports some corrupt files as SyntaxError
            raise ValueError(f"reference image {path} cannot be read ({err})") from None
    return {"id": None if item_id is None else str(item_id), "prompt": record["prompt"], "seed": seed, "image": images}


def read_items(path: str | Path, base_seed: int = 0) -> tuple[list[JobItem], list[str]]:
    """Items of a ``.jsonl`` file (objects with ``prompt`` and optional ``id``, ``seed``, ``image``; relative
    image paths are relative to the file) or of a text file (one prompt per line; blank lines skipped).

    Returns the good items and one message per bad line (reported and skipped, not fatal). A line that
    repeats an earlier item exactly is the same item and is generated once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err})") from None
    items: dict[str, JobItem] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line) if path.suffix == ".jsonl" else {"prompt": line}
            record = _check_record(record, path.parent)
        except json.JSONDecodeError as err:
            problems.append(f"{path}:{number}: not valid JSON ({err}); line skipped")
            continue
        except ValueError as err:
            problems.append(f"{path}:{number}: {err}; line skipped")
            continue
        digest = _content_hash(record)
        item = JobItem(record["id"] or f"p{digest[:16]}", record["prompt"],
                       record["seed"] if record["seed"] is not None else (base_seed + int(digest[:15], 16)) % (MAX_SEED + 1),
                       tuple(record["image"]), number)
        earlier = items.get(item.id)
        if earlier is not None:
            if dataclasses.replace(earlier, line=number) != item:
                problems.append(f"{path}:{number}: id {item.id!r} was already used on line {earlier.line} for "
                                "another item; line skipped")
            continue
        items[item.id] = item
    return list(items.values()), problems


def distributed_rank() -> tuple[int, int]:
    """(rank, world size): from ``mindspore.communication`` under msrun, else (0, 1)."""
    if not any(k in os.environ for k in ("MS_ROLE", "MS_WORKER_NUM", "RANK_SIZE")):
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init

    init()
    return get_rank(), get_group_size()


def item_settings(cfg: BatchJobConfig, item: JobItem, model_id: list) -> dict:
    """Everything an item's image depends on; an existing image counts as done only if it was made with these."""
    return {"prompt": item.prompt, "seed": item.seed, "image": [[str(Path(i).resolve()), fingerprint(Path(i))] for i in item.images],
            "model": model_id, "height": cfg.height, "width": cfg.width, "steps": cfg.steps,
            "guidance_scale": cfg.guidance_scale}


def is_done(item: JobItem, out_dir: Path, settings: dict) -> bool:
    try:
        record = json.loads((out_dir / f"{item.id}.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return (out_dir / f"{item.id}.png").is_file() and record.get("settings") == settings


class Claims:
    """Per-item claim files in ``<out_dir>/.claims``: whoever creates ``<id>.claim`` first computes the item."""

    def __init__(self, out_dir: Path, stale_seconds: float):
        self.folder = out_dir / ".claims"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.stale_seconds = stale_seconds
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialises take-overs of stale claims (two takers must not both win)."""
        with open(self.folder / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _stale(self, path: Path) -> bool:
        try:
            owner = json.loads(path.read_text(encoding="utf-8"))
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return False  # being written right now
        if owner.get("host") == self.owner["host"]:
            try:
                os.kill(int(owner["pid"]), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, KeyError, ValueError, TypeError):
                return False
            return False
        return age > self.stale_seconds

    def acquire(self, item_id: str) -> bool:
        """True if this process now holds the item's claim."""
        path = self.folder / f"{item_id}.claim"
        with self._locked():
            if path.exists():
                if not self._stale(path):
                    return False
                path.unlink(missing_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                json.dump({**self.owner, "time": time.time()}, fh)
        return True

    def release(self, item_id: str, only_if_mine: bool = False) -> None:
        path = self.folder / f"{item_id}.claim"
        if only_if_mine:
            try:
                if {k: v for k, v in json.loads(path.read_text(encoding="utf-8")).items() if k in self.owner} != self.owner:
                    return
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                return
        path.unlink(missing_ok=True)


def run_batch(cfg: BatchJobConfig, pipe=None, rank: int = 0, world: int = 1, progress: bool = True,
              items: list[JobItem] | None = None) -> dict:
    """Generate this rank's pending items; returns counts. ``pipe``: a loaded ``GlmImagePipeline`` for
    ``overlap: false`` (loaded here if None; the engine's stage workers load their own); ``items`` (from
    ``read_items``) defaults to the prompts file's."""
    from ..pipeline.engine import GenerationRequest, PipelineLoader, run_engine

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if items is None:
        items, problems = read_items(cfg.prompts, cfg.base_seed)
        for message in problems:
            print(f"warning: {message}", file=sys.stderr)
    mine = items[rank::world]
    model_id = [str(Path(cfg.model).resolve()), fingerprint(Path(cfg.model))]
    settings = {item.id: item_settings(cfg, item, model_id) for item in mine}
    todo = [it for it in mine if not is_done(it, out_dir, settings[it.id])]
    claims = Claims(out_dir, cfg.stale_claim_seconds)
    counts = {"rank": rank, "world": world, "assigned": len(mine), "generated": 0, "skipped": len(mine) - len(todo),
              "claimed_elsewhere": 0, "failed": []}
    bar = tqdm(total=len(todo), desc=f"rank {rank}/{world}", unit="img", disable=not progress)
    loader = PipelineLoader(cfg.model, cfg.device)

    def claimed() -> Iterator[JobItem]:
        """Pending items, each claimed as it is taken."""
        for item in todo:
            if not claims.acquire(item.id):
                counts["claimed_elsewhere"] += 1  # another run is computing it
                bar.update(1)
            elif is_done(item, out_dir, settings[item.id]):  # another run finished it since this one looked
                claims.release(item.id)
                counts["skipped"] += 1
                bar.update(1)
            else:
                yield item

    def fail(item: JobItem, err) -> None:
        print(f"error: item {item.id} (line {item.line}): {err}; skipped", file=sys.stderr)
        counts["failed"].append(item.id)
        claims.release(item.id)
        bar.update(1)

    def save(item: JobItem, image, timings) -> None:
        save_image_atomic(image, out_dir / f"{item.id}.png")
        write_json_atomic(out_dir / f"{item.id}.json", {
            "id": item.id, "settings": settings[item.id], "rank": rank, "timings": dataclasses.asdict(timings)})
        claims.release(item.id)
        counts["generated"] += 1
        bar.update(1)

    def run(group: list[JobItem]) -> None:
        try:
            out = pipe([it.prompt for it in group], image=list(group[0].images) or None, height=cfg.height,
                       width=cfg.width, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                       seed=[it.seed for it in group], progress=False)
        except (ValueError, OSError) as err:  # a bad item, not a broken job: report, skip, go on
            if len(group) > 1:  # find which of the batch it was
                for item in group:
                    run([item])
                return
            fail(group[0], err)
            return
        for item, image in zip(group, out.images):
            save(item, image, out.timings)

    try:
        if cfg.overlap:
            by_id = {item.id: item for item in todo}
            requests = (GenerationRequest(item.id, item.prompt, item.seed, cfg.height, cfg.width, cfg.steps,
                                          cfg.guidance_scale, item.images) for item in claimed())
            for result in run_engine(requests, loader, cfg.engine_config(), cfg.device):
                if result.error is None:
                    save(by_id[result.request.key], result.images[0], result.timings)
                else:
                    fail(by_id[result.request.key], result.error)
        else:
            pipe = pipe or loader(None)
            group: list[JobItem] = []
            for item in claimed():
                if group and (item.images or group[0].images or len(group) >= cfg.batch_size):
                    run(group)  # text-to-image items are batched together; image-to-image items run one by one
                    group = []
                group.append(item)
            if group:
                run(group)
    finally:
        for item in todo:  # claims of items this run did not finish (an error, an interrupt)
            claims.release(item.id, only_if_mine=True)
    bar.close()
    return counts
