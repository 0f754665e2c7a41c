"""Batch generation over a prompts file, sharded across ``msrun`` workers and resumable.

Every item gets an id and a seed of its own (default: ``base_seed + line index``), and an image depends
on its item only, whatever ``batch_size`` and whichever batch-mates it gets: the pipeline draws each
item's noise and AR samples from its own seed and masks the zero padding of a batch's glyph embeddings
in the DiT (the reference attends to it), so rerunning, rebatching or resharding over another number of
workers gives the same images (up to float rounding of batched matmuls, ~1e-6).
An item is done when ``<id>.png`` and ``<id>.json`` exist (both written atomically), so a killed job loses nothing finished and a rerun continues where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from tqdm import tqdm

from ..config.base import ConfigError, HFConfig, write_json_atomic


@dataclasses.dataclass
class BatchJobConfig(HFConfig):
    """A batch job (``configs/jobs/*.json``); command-line flags override its fields."""

    model: str = ""
    prompts: str = ""
    out_dir: str = "outputs"
    height: int = 1024
    width: int = 1024
    steps: int = 50
    guidance_scale: float = 1.5
    base_seed: int = 0
    batch_size: int = 1
    device: str | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be at least 1")
        for name in ("model", "prompts"):
            if not getattr(self, name):
                raise ConfigError(f"the job needs '{name}' (set it in the job config or pass --{name})")


@dataclasses.dataclass(frozen=True)
class JobItem:
    id: str
    prompt: str
    seed: int
    images: tuple[str, ...] = ()


def read_items(path: str | Path, base_seed: int = 0) -> list[JobItem]:
    """Items of a ``.jsonl`` file (objects with ``prompt`` and optional ``id``, ``seed``, ``image``) or of
    a text file (one prompt per line; blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    items, seen = [], set()
    for index, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{index + 1}: not valid JSON ({err})") from err
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise ValueError(f"{path}:{index + 1}: each line needs a JSON object with a 'prompt' string")
        else:
            record = {"prompt": line}
        item_id = str(record.get("id", f"{index:06d}"))
        if item_id in seen or "/" in item_id or item_id.startswith("."):
            raise ValueError(f"{path}:{index + 1}: id {item_id!r} is duplicated or not a plain file name")
        seen.add(item_id)
        images = record.get("image") or []
        items.append(JobItem(item_id, record["prompt"], int(record.get("seed", base_seed + index)),
                             tuple([images] if isinstance(images, str) else images)))
    return items


def distributed_rank() -> tuple[int, int]:
    """(rank, world size): from ``mindspore.communication`` under msrun, else (0, 1)."""
    if not any(k in os.environ for k in ("MS_ROLE", "MS_WORKER_NUM", "RANK_SIZE")):
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init

    init()
    return get_rank(), get_group_size()


def is_done(item: JobItem, out_dir: Path) -> bool:
    return (out_dir / f"{item.id}.png").is_file() and (out_dir / f"{item.id}.json").is_file()


def run_batch(cfg: BatchJobConfig, pipe, rank: int = 0, world: int = 1, progress: bool = True) -> dict:
    """Generate this rank's pending items; returns counts. ``pipe`` is a loaded ``GlmImagePipeline``."""
    from ..pipeline.glm_image_pipeline import save_images

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mine = read_items(cfg.prompts, cfg.base_seed)[rank::world]
    todo = [it for it in mine if not is_done(it, out_dir)]
    groups: list[list[JobItem]] = []
    for item in todo:  # batch text-to-image items together; image-to-image items run one by one
        if groups and not item.images and not groups[-1][0].images and len(groups[-1]) < cfg.batch_size:
            groups[-1].append(item)
        else:
            groups.append([item])
    bar = tqdm(total=len(todo), desc=f"rank {rank}/{world}", unit="img", disable=not progress)
    for group in groups:
        out = pipe([it.prompt for it in group], image=list(group[0].images) or None, height=cfg.height,
                   width=cfg.width, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                   seed=[it.seed for it in group], progress=False)
        for item, image in zip(group, out.images):
            save_images([image], out_dir / f"{item.id}.png")
            write_json_atomic(out_dir / f"{item.id}.json", {
                "id": item.id, "prompt": item.prompt, "seed": item.seed, "image": list(item.images),
                "height": cfg.height, "width": cfg.width, "steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
                "model": cfg.model, "rank": rank, "timings": dataclasses.asdict(out.timings)})
        bar.update(len(group))
    bar.close()
    return {"rank": rank, "world": world, "assigned": len(mine), "generated": len(todo),
            "skipped": len(mine) - len(todo)}
