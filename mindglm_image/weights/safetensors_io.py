"""A small safetensors reader/writer that streams tensors and keeps bf16 bytes intact.

numpy has no bfloat16, so the stock numpy reader cannot open the official checkpoint; here a tensor is
its raw bytes plus a dtype tag, read only when asked for, so conversion copies bytes exactly and
peak memory stays near one tensor.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..atomic import atomic_file

#: safetensors dtype tag -> numpy dtype used to hold its bytes (BF16 is held as uint16); the one table of
#: tags and item sizes (``tensor_nbytes``)
DTYPE_TO_NUMPY: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
}
_NUMPY_TO_DTYPE = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
                   np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("<i2"): "I16", np.dtype("i1"): "I8",
                   np.dtype("u1"): "U8", np.dtype("<u2"): "U16", np.dtype("<u4"): "U32", np.dtype("<u8"): "U64",
                   np.dtype("?"): "BOOL"}
#: floating tags that model weights may have, and the targets of ``convert --dtype``
FLOAT_TAGS = ("F32", "F16", "BF16")
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, or does not match the model."""


def tensor_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of this dtype tag and shape."""
    return int(np.prod(shape, dtype=np.int64)) * DTYPE_TO_NUMPY[dtype].itemsize


@dataclasses.dataclass(frozen=True)
class TensorData:
    """One tensor as stored: dtype tag, shape and raw little-endian bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    raw: np.ndarray  # 1-D uint8 bytes

    @property
    def nbytes(self) -> int:
        return int(self.raw.size)

    def array(self) -> np.ndarray:
        """The values as numpy; BF16 is widened to float32 exactly (bf16 is fp32's top 16 bits)."""
        if self.dtype == "BF16":
            bits = self.raw.view("<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(self.shape)
        return self.raw.view(DTYPE_TO_NUMPY[self.dtype]).reshape(self.shape)

    @classmethod
    def from_array(cls, name: str, array: np.ndarray, dtype: str | None = None) -> "TensorData":
        """Wrap a numpy array; ``dtype='BF16'`` rounds float32 to bf16 (round-to-nearest-even)."""
        array = np.ascontiguousarray(array)
        if dtype == "BF16":
            bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
            nan = np.isnan(array.astype(np.float32))
            rounded[nan] = 0x7FC0
            return cls(name, "BF16", tuple(array.shape), rounded.reshape(-1).view(np.uint8))
        if dtype is not None and DTYPE_TO_NUMPY[dtype] != array.dtype.newbyteorder("<"):
            array = array.astype(DTYPE_TO_NUMPY[dtype])
        tag = dtype or _NUMPY_TO_DTYPE.get(array.dtype.newbyteorder("<"))
        if tag is None:
            raise CheckpointError(f"tensor {name}: numpy dtype {array.dtype} has no safetensors equivalent")
        return cls(name, tag, tuple(array.shape), array.astype(array.dtype.newbyteorder("<")).reshape(-1).view(np.uint8))

    def cast(self, dtype: str) -> "TensorData":
        """Same values in another floating dtype; a no-op when the dtype already matches."""
        if dtype == self.dtype:
            return self
        return TensorData.from_array(self.name, self.array().astype(np.float32) if dtype == "BF16" else self.array(), dtype)


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Header entry of one tensor inside a file (no data read)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


class SafetensorsFile:
    """Lazy view of one ``.safetensors`` file: header validated up front, each tensor read on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"checkpoint shard not found: {self.path}")
        size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{self.path}: file is {size} bytes, too short to be safetensors (truncated?)")
            (hlen,) = struct.unpack("<Q", head)
            if hlen > _MAX_HEADER or 8 + hlen > size:
                raise CheckpointError(f"{self.path}: header length {hlen} exceeds the file ({size} bytes); the file is corrupt or truncated")
            try:
                header = json.loads(fh.read(hlen))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{self.path}: header is not valid JSON ({err}); the file is corrupt") from err
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + hlen
        data_len = size - self._data_start
        self.infos: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            dtype, shape, (start, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
            if dtype not in DTYPE_TO_NUMPY:
                raise CheckpointError(f"{self.path}: tensor {name} has unsupported dtype {dtype}")
            expected = tensor_nbytes(dtype, shape)
            if end - start != expected:
                raise CheckpointError(f"{self.path}: tensor {name} holds {end - start} bytes, its shape {list(shape)} {dtype} needs {expected}")
            if end > data_len:
                raise CheckpointError(
                    f"{self.path}: tensor {name} ends at byte {end} but the file has {data_len} data bytes; "
                    "the shard is truncated, copy or convert it again"
                )
            self.infos[name] = TensorInfo(name, dtype, shape, start, end)

    def keys(self) -> list[str]:
        return list(self.infos)

    def get(self, name: str) -> TensorData:
        info = self.infos.get(name)
        if info is None:
            raise CheckpointError(f"{self.path}: no tensor named {name}")
        # a plain read, not a memory map: the bytes are the caller's until dropped, so streaming
        # conversion holds one tensor at a time instead of accumulating mapped pages of every shard
        raw = np.fromfile(self.path, dtype=np.uint8, count=info.end - info.start, offset=self._data_start + info.start)
        if raw.size != info.end - info.start:
            raise CheckpointError(f"{self.path}: tensor {name} could not be read completely (file changed or truncated)")
        return TensorData(name, info.dtype, info.shape, raw)

    def __iter__(self) -> Iterator[TensorData]:
        for name in self.infos:
            yield self.get(name)


def write_safetensors(path: str | os.PathLike, tensors: Iterable[TensorData] | list[TensorData],
                      metadata: dict[str, str] | None = None) -> dict[str, str]:
    """Write tensors to ``path`` atomically; returns each tensor's sha256 (see ``write_safetensors_streamed``)."""
    tensors = list(tensors)
    return write_safetensors_streamed(path, [(t.name, t.dtype, t.shape) for t in tensors], (t.raw for t in tensors),
                                      metadata)


def write_safetensors_streamed(path: str | os.PathLike, specs: list[tuple[str, str, tuple[int, ...]]],
                               payloads: Iterable[np.ndarray], metadata: dict[str, str] | None = None) -> dict[str, str]:
    """Write a file whose header is known up front and whose tensors arrive one at a time.

    ``payloads`` yields each tensor's raw bytes (uint8 array) in ``specs`` order, so only one tensor is in
    memory at once. The file is written to a temporary name, fsynced and renamed: a crash leaves no file
    under ``path``. Returns ``{name: sha256 of the tensor's bytes}`` for checksum manifests.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    sizes = []
    for name, dtype, shape in specs:
        if name in header:
            raise CheckpointError(f"duplicate tensor name {name} while writing {path}")
        size = tensor_nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        sizes.append(size)
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    digests: dict[str, str] = {}
    with atomic_file(path) as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        payloads = iter(payloads)
        for (name, _, _), size in zip(specs, sizes):
            raw = np.ascontiguousarray(next(payloads)).view(np.uint8).reshape(-1)
            if raw.size != size:
                raise CheckpointError(f"tensor {name}: got {raw.size} bytes, its header needs {size}")
            view = memoryview(raw)
            fh.write(view)
            digests[name] = hashlib.sha256(view).hexdigest()
    return digests
