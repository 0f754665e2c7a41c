"""Prove a converted folder matches its source: every tensor's bytes against the conversion manifest."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.safetensors_io import CheckpointError

from mindglm_image.weights.components import COMPONENTS

from .convert import MANIFEST
from .model_index import component_names, read_model_index


def verify_component(folder: str | Path, source: str | Path | None = None) -> list[str]:
    """Problems found in one converted component folder (empty list: verified).

    Checks that every tensor in the manifest is present with its dtype, shape and sha256, that no
    other tensor is there, and, with ``source``, that the source tensors still hash as recorded.
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


def verify_model_folder(folder: str | Path, source: str | Path | None = None) -> list[str]:
    """Problems in every part named by the folder's model_index.json (weight parts need a manifest)."""
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
            problems += verify_component(folder / name, None if source is None else Path(source) / name)
        elif not (folder / name).is_dir():
            problems.append(f"{folder / name} missing: model_index.json names it")
    return problems


def _sha256(raw: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(raw))).hexdigest()
