"""Convert one component folder between the Hugging Face layout and ours, streaming tensor by tensor.

Every tensor is checked against the shapes the model's config implies before anything is written;
the output is assembled in a temporary folder and moved into place only when complete, with a
checksum manifest (``conversion_manifest.json``) that ``verify`` uses to prove it matches its source.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mindglm_image.atomic import atomic_dir, copy_file, write_json_atomic
from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import MS_STEM, ComponentSpec, build_cell, load_config
from mindglm_image.weights.safetensors_io import FLOAT_TAGS, CheckpointError, tensor_nbytes, write_safetensors_streamed

MANIFEST = "conversion_manifest.json"


@dataclasses.dataclass(frozen=True)
class ConversionConfig:
    direction: str = "hf2ms"            # "hf2ms" or "ms2hf"
    dtype: str | None = None            # None keeps each tensor's dtype; else "F32" | "F16" | "BF16"
    max_shard_bytes: int = 5 * 1024**3  # shard size of the written checkpoint
    progress: bool = False              # tqdm bar over tensors

    def __post_init__(self):
        if self.direction not in ("hf2ms", "ms2hf"):
            raise ValueError(f"direction must be 'hf2ms' or 'ms2hf', got {self.direction!r}")
        if self.dtype not in (None, *FLOAT_TAGS):
            raise ValueError(f"dtype must be one of {FLOAT_TAGS} or None, got {self.dtype!r}")

    def stems(self, spec: ComponentSpec) -> tuple[str, str]:
        """(source, output) file stems; tensor names are the same in both layouts."""
        return (spec.hf_stem, MS_STEM) if self.direction == "hf2ms" else (MS_STEM, spec.hf_stem)


def expected_tensors(spec: ComponentSpec, folder: Path) -> dict[str, tuple[int, ...]]:
    """Parameter name -> shape, from the folder's config.json.

    Parameters are created with lazy initializers, so even the real-size model allocates no weights here.
    """
    cell = build_cell(spec, load_config(spec, folder))
    return {name: tuple(p.shape) for name, p in cell.parameters_dict().items()}


def check_against_config(ckpt: ShardedCheckpoint, expected: dict[str, tuple[int, ...]]) -> None:
    """Every tensor known, of the right shape and a float dtype; none missing. Errors name tensor and file."""
    seen = set()
    for name in ckpt.keys():
        info = ckpt.info(name)
        where = f"tensor {name} in {ckpt.file_of(name)}"
        if name not in expected:
            raise CheckpointError(f"unexpected {where}: the model defined by config.json has no such parameter")
        if info.shape != expected[name]:
            raise CheckpointError(f"{where} has shape {list(info.shape)}, config.json implies {list(expected[name])}")
        if info.dtype not in FLOAT_TAGS:
            raise CheckpointError(f"{where} has dtype {info.dtype}; weights must be one of {', '.join(FLOAT_TAGS)}")
        seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise CheckpointError(f"{ckpt.folder}: missing {len(missing)} tensor(s) the model needs: {missing[:8]}")


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

    Non-weight files (config.json, generation_config.json, ...) are copied unchanged. Only one tensor
    is held in memory at a time.
    """
    src, dst = Path(src), Path(dst)
    src_stem, dst_stem = cfg.stems(spec)
    ckpt = ShardedCheckpoint(src, src_stem)
    check_against_config(ckpt, expected_tensors(spec, src))

    def out_dtype(name: str) -> str:
        return cfg.dtype or ckpt.info(name).dtype

    names = ckpt.keys()
    sizes = {n: tensor_nbytes(out_dtype(n), ckpt.info(n).shape) for n in names}
    shards = _plan_shards(names, sizes, cfg.max_shard_bytes)
    manifest: dict[str, dict] = {}
    bar = tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc=f"convert {spec.name}", disable=not cfg.progress)
    with bar, atomic_dir(dst) as work:
        for item in sorted(src.iterdir()):
            if item.is_file() and ".safetensors" not in item.name and not item.name.startswith(".") and item.name != MANIFEST:
                copy_file(item, work / item.name)
        weight_map: dict[str, str] = {}
        for i, shard_names in enumerate(shards, 1):
            fname = f"{dst_stem}.safetensors" if len(shards) == 1 else f"{dst_stem}-{i:05d}-of-{len(shards):05d}.safetensors"
            specs = [(n, out_dtype(n), ckpt.info(n).shape) for n in shard_names]

            def payloads(shard_names=shard_names) -> Iterator[np.ndarray]:
                for name in shard_names:
                    t = ckpt.get(name)
                    manifest[name] = {"source": name, "source_file": ckpt.weight_map[name],
                                              "source_dtype": t.dtype,
                                              "source_sha256": hashlib.sha256(memoryview(np.ascontiguousarray(t.raw))).hexdigest()}
                    yield t.cast(out_dtype(name)).raw
                    bar.update(sizes[name])

            digests = write_safetensors_streamed(work / fname, specs, payloads(),
                                                 metadata={"format": "pt" if cfg.direction == "ms2hf" else "ms"})
            for (out_name, dtype, shape) in specs:
                manifest[out_name].update(file=fname, dtype=dtype, shape=list(shape), sha256=digests[out_name])
                weight_map[out_name] = fname
        if len(shards) > 1:
            write_json_atomic(work / f"{dst_stem}.safetensors.index.json",
                              {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map})
        write_json_atomic(work / MANIFEST, {"component": spec.name, "direction": cfg.direction, "dtype": cfg.dtype,
                                            "stem": dst_stem, "tensors": manifest})
    return dst
