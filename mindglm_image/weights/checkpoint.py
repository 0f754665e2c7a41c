"""A model folder's weights: one safetensors file or shards listed by a ``*.safetensors.index.json``."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from .safetensors_io import CheckpointError, SafetensorsFile, TensorData


class ShardedCheckpoint:
    """Read-only view of the weights in one component folder, validated against its index."""

    def __init__(self, folder: str | os.PathLike, stem: str | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise CheckpointError(f"weights folder not found: {self.folder}")
        index_path, single = self._locate(stem)
        self.index_path = index_path
        self.files: dict[str, SafetensorsFile] = {}
        self.weight_map: dict[str, str] = {}
        if index_path is not None:
            try:
                index = json.loads(index_path.read_text(encoding="utf-8"))
                weight_map = index["weight_map"]
            except (json.JSONDecodeError, KeyError) as err:
                raise CheckpointError(f"{index_path}: not a valid safetensors index ({err})") from err
            for shard in sorted(set(weight_map.values())):
                self.files[shard] = SafetensorsFile(self.folder / shard)
            for name, shard in weight_map.items():
                if name not in self.files[shard].infos:
                    raise CheckpointError(f"{index_path} lists tensor {name} in {shard}, but that file does not hold it")
            for shard, f in self.files.items():
                for name in f.keys():
                    if weight_map.get(name) != shard:
                        raise CheckpointError(f"{self.folder / shard} holds tensor {name} that {index_path.name} does not list there")
            self.weight_map = dict(weight_map)
        else:
            self.files[single.name] = SafetensorsFile(single)
            self.weight_map = {name: single.name for name in self.files[single.name].keys()}

    def _locate(self, stem: str | None) -> tuple[Path | None, Path | None]:
        pattern = f"{stem}.safetensors" if stem else "*.safetensors"
        indexes = sorted(self.folder.glob(pattern + ".index.json"))
        if len(indexes) > 1:
            raise CheckpointError(f"{self.folder}: several weight indexes {[p.name for p in indexes]}; keep one")
        if indexes:
            return indexes[0], None
        singles = sorted(p for p in self.folder.glob(pattern) if not p.name.startswith("."))
        if len(singles) != 1:
            raise CheckpointError(
                f"{self.folder}: expected one {pattern} file or a {pattern}.index.json, found "
                f"{[p.name for p in singles] or 'none'}"
            )
        return None, singles[0]

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def file_of(self, name: str) -> Path:
        return self.folder / self.weight_map[name]

    def info(self, name: str):
        return self.files[self.weight_map[name]].infos[name]

    def get(self, name: str) -> TensorData:
        if name not in self.weight_map:
            raise CheckpointError(f"{self.folder}: no tensor named {name}")
        return self.files[self.weight_map[name]].get(name)

    def __iter__(self) -> Iterator[TensorData]:
        """Tensors shard by shard, in file order: streaming order for conversion."""
        for f in self.files.values():
            yield from f
