"""Convert one component folder between the Hugging Face layout and ours, streaming shard by shard.

Every tensor is checked against the shapes the model's config implies before anything is written;
the output is assembled in a temporary folder and moved into place only when complete.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from mindglm_image.config.base import write_json_atomic
from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import MS_STEM, ComponentSpec, build_cell, load_config
from mindglm_image.weights.safetensors_io import CheckpointError, TensorData, write_safetensors

_FLOAT_TAGS = ("F32", "F16", "BF16")


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    direction: str = "hf2ms"            # "hf2ms" or "ms2hf"
    dtype: str | None = None            # None keeps each tensor's dtype; else "F32" | "F16" | "BF16"
    max_shard_bytes: int = 5 * 1024**3  # shard size of the written checkpoint

    def __post_init__(self):
        if self.direction not in ("hf2ms", "ms2hf"):
            raise ValueError(f"direction must be 'hf2ms' or 'ms2hf', got {self.direction!r}")
        if self.dtype not in (None, *_FLOAT_TAGS):
            raise ValueError(f"dtype must be one of {_FLOAT_TAGS} or None, got {self.dtype!r}")


def expected_tensors(spec: ComponentSpec, folder: Path) -> dict[str, tuple[int, ...]]:
    """MindSpore parameter name -> shape, from the folder's config.json (no weights are allocated)."""
    cell = build_cell(spec, load_config(spec, folder))
    return {name: tuple(p.shape) for name, p in cell.parameters_dict().items()}


def _check(src: ShardedCheckpoint, to_ms_name, expected: dict[str, tuple[int, ...]]) -> None:
    seen = set()
    for name in src.keys():
        info = src.info(name)
        ms_name = to_ms_name(name)
        where = f"tensor {name} in {src.file_of(name)}"
        if ms_name not in expected:
            raise CheckpointError(f"unexpected {where}: the model defined by config.json has no such parameter")
        if info.shape != expected[ms_name]:
            raise CheckpointError(f"{where} has shape {list(info.shape)}, config.json implies {list(expected[ms_name])}")
        if info.dtype not in _FLOAT_TAGS:
            raise CheckpointError(f"{where} has dtype {info.dtype}; weights must be F32, F16 or BF16")
        seen.add(ms_name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise CheckpointError(f"{src.folder}: missing {len(missing)} tensor(s) the model needs: {missing[:8]}")


def _plan_shards(names: list[str], sizes: dict[str, int], limit: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    used = 0
    for name in names:
        if shards[-1] and used + sizes[name] > limit:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += sizes[name]
    return shards


def convert_component(spec: ComponentSpec, src: str | Path, dst: str | Path,
                      cfg: ConversionConfig = ConversionConfig()) -> Path:
    """Convert ``src`` (one component folder) into ``dst``; returns ``dst``.

    Non-weight files (config.json, generation_config.json, ...) are copied unchanged.
    """
    src, dst = Path(src), Path(dst)
    src_stem, dst_stem = (spec.hf_stem, MS_STEM) if cfg.direction == "hf2ms" else (MS_STEM, spec.hf_stem)
    rename = spec.hf_to_ms if cfg.direction == "hf2ms" else spec.ms_to_hf
    ckpt = ShardedCheckpoint(src, src_stem)
    expected = expected_tensors(spec, src)
    _check(ckpt, spec.hf_to_ms if cfg.direction == "hf2ms" else (lambda n: n), expected)

    def out_bytes(name: str) -> int:
        info = ckpt.info(name)
        n = int(info.end - info.start)
        if cfg.dtype and info.dtype != cfg.dtype:
            n = n * {"F32": 4, "F16": 2, "BF16": 2}[cfg.dtype] // {"F32": 4, "F16": 2, "BF16": 2}[info.dtype]
        return n

    names = ckpt.keys()
    shards = _plan_shards(names, {n: out_bytes(n) for n in names}, cfg.max_shard_bytes)
    dst.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        for item in sorted(src.iterdir()):
            if item.is_file() and ".safetensors" not in item.name and not item.name.startswith("."):
                shutil.copy2(item, work / item.name)
        weight_map: dict[str, str] = {}
        total = 0
        for i, shard_names in enumerate(shards, 1):
            fname = f"{dst_stem}.safetensors" if len(shards) == 1 else f"{dst_stem}-{i:05d}-of-{len(shards):05d}.safetensors"
            tensors: list[TensorData] = []
            for name in shard_names:
                t = ckpt.get(name)
                if cfg.dtype:
                    t = t.cast(cfg.dtype)
                tensors.append(t.renamed(rename(name)))
                weight_map[rename(name)] = fname
                total += tensors[-1].nbytes
            write_safetensors(work / fname, tensors, metadata={"format": "pt" if cfg.direction == "ms2hf" else "ms"})
        if len(shards) > 1:
            write_json_atomic(work / f"{dst_stem}.safetensors.index.json",
                              {"metadata": {"total_size": total}, "weight_map": weight_map})
        _replace_dir(work, dst)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return dst


def _replace_dir(new: Path, dst: Path) -> None:
    """Move a finished folder into place; an existing folder is swapped out only after the move succeeds."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(new, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dst)
