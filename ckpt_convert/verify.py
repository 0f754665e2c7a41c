"""Prove a converted folder matches its source: every file is covered by a conversion manifest.

Weight shards: every tensor's dtype, shape and sha256 against its component's manifest. Every other file
(model_index.json, configs, tokenizer, processor, scheduler, shard indexes): sha256 against the root
manifest, and JSON files must parse. A file that no manifest names is reported too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import COMPONENTS
from mindglm_image.weights.safetensors_io import CheckpointError

from .convert import MANIFEST
from .model_index import component_names, read_model_index


def verify_component(folder: str | Path, source: str | Path | None = None, dtype: str | None = None) -> list[str]:
    """Problems found in one converted component folder (empty list: verified).

    Checks that every tensor in the manifest is present with its dtype, shape and sha256, that no
    other tensor or shard is there, that tensors have the requested dtype (the manifest's, or ``dtype``),
    and, with ``source``, that the source tensors still hash as recorded.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return [f"{path} missing: {folder} was not written by a complete conversion"]
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        ckpt = ShardedCheckpoint(folder, manifest["stem"])
    except (json.JSONDecodeError, KeyError, CheckpointError) as err:
        return [f"{folder}: {err}"]
    problems = []
    recorded = manifest["tensors"]
    for name in sorted(set(ckpt.keys()) - set(recorded)):
        problems.append(f"{folder}: tensor {name} is not in the manifest")
    shards = {entry["file"] for entry in recorded.values()}
    for shard in sorted(p.name for p in folder.glob("*.safetensors") if p.name not in shards):
        problems.append(f"{folder / shard}: weight file not covered by the manifest")
    for want, why in ((manifest.get("dtype"), "the conversion asked for"), (dtype, "--dtype asks for")):
        wrong = sorted(n for n, e in recorded.items() if want is not None and e["dtype"] != want)
        if wrong:
            problems.append(f"{folder}: {len(wrong)} tensor(s) are not {want} as {why}: {wrong[:4]}")
    src_ckpt = None
    if source is not None:
        try:
            src_ckpt = ShardedCheckpoint(source)
        except CheckpointError as err:
            problems.append(f"source {source}: {err}")
    for name, entry in recorded.items():
        if name not in ckpt.weight_map:
            problems.append(f"{folder}: tensor {name} (from {entry['source']}) is missing")
            continue
        t = ckpt.get(name)
        if t.dtype != entry["dtype"] or list(t.shape) != entry["shape"]:
            problems.append(f"{ckpt.file_of(name)}: tensor {name} is {t.dtype} {list(t.shape)}, manifest says "
                            f"{entry['dtype']} {entry['shape']}")
        elif _sha256(t.raw) != entry["sha256"]:
            problems.append(f"{ckpt.file_of(name)}: tensor {name} bytes do not match the manifest checksum")
        if src_ckpt is not None:
            if entry["source"] not in src_ckpt.weight_map:
                problems.append(f"source {source}: tensor {entry['source']} is missing")
            elif _sha256(src_ckpt.get(entry["source"]).raw) != entry["source_sha256"]:
                problems.append(f"source {src_ckpt.file_of(entry['source'])}: tensor {entry['source']} changed since conversion")
    return problems


def verify_model_folder(folder: str | Path, source: str | Path | None = None, dtype: str | None = None) -> list[str]:
    """Problems anywhere in a converted model folder: each weight part, then every other file."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    try:
        names = component_names(read_model_index(folder))
    except CheckpointError as err:
        return [f"{err} (not a complete model folder)"]
    problems = []
    for name in names:
        if name in COMPONENTS:
            problems += verify_component(folder / name, None if source is None else Path(source) / name, dtype)
        elif not (folder / name).is_dir():
            problems.append(f"{folder / name} missing: model_index.json names it")
    return problems + _verify_files(folder, None if source is None else Path(source))


def _verify_files(folder: Path, source: Path | None) -> list[str]:
    path = folder / MANIFEST
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        return [f"{path} unreadable ({err}): {folder} was not written by a complete conversion; convert it again"]
    if not isinstance(files, dict):
        return [f"{path}: the conversion into {folder} did not finish; convert it again"]
    problems = []
    present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    for rel in sorted(set(present) - set(files)):
        if rel != MANIFEST and not is_tensor_file(rel):
            problems.append(f"{present[rel]}: not covered by the conversion manifest")
    for rel, entry in sorted(files.items()):
        if rel not in present:
            problems.append(f"{folder / rel} missing (listed in {path})")
            continue
        if file_sha256(present[rel]) != entry["sha256"]:
            problems.append(f"{present[rel]}: bytes differ from those recorded at conversion")
        if rel.endswith(".json"):
            try:
                json.loads(present[rel].read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                problems.append(f"{present[rel]}: not valid JSON ({err})")
        if source is not None and entry["from_source"]:
            src = source / rel
            if not src.is_file():
                problems.append(f"source {src} missing")
            elif file_sha256(src) != entry["sha256"]:
                problems.append(f"source {src} changed since conversion")
    return problems


def is_tensor_file(rel: str) -> bool:
    """Weight shards and component manifests (``verify_component`` covers those), by path in the model folder."""
    part, _, name = rel.partition("/")
    return part in COMPONENTS and (name == MANIFEST or name.endswith(".safetensors"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256(raw: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(raw))).hexdigest()
