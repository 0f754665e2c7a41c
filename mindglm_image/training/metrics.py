"""Training metrics: a tqdm bar with loss / lr / samples/s, ``metrics.jsonl``, and TensorBoard event files.

The TensorBoard writer is ours (no TensorFlow or tensorboard dependency): TFRecord framing with masked
CRC-32C around hand-encoded ``Event``/``Summary`` protobuf messages holding scalar ``simple_value``s.
"""
from __future__ import annotations

import json
import socket
import struct
import time
from pathlib import Path

from tqdm import tqdm

from ..config.base import write_json_atomic

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum of TFRecord files."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, scalars: dict[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    """An ``Event`` message: wall_time (1, double), step (2, int64), file_version (3) or summary (5)."""
    msg = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        msg += _field_bytes(3, file_version.encode())
    if scalars:
        values = b"".join(_field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", v))
                          for tag, v in scalars.items())
        msg += _field_bytes(5, values)
    return msg


def tfrecord(data: bytes) -> bytes:
    """TFRecord framing: length, masked CRC of the length, data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


class MetricsLogger:
    """Rank 0 writes; other ranks only keep the numbers. ``log`` once per optimizer step."""

    def __init__(self, out_dir: str | Path, total_steps: int, start_step: int = 0, enabled: bool = True,
                 progress: bool = True):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                        disable=not (enabled and progress))
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._drop_lines_after(start_step)
        self.jsonl = open(self.out_dir / METRICS_FILE, "a", encoding="utf-8")
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.mindglm"
        (self.out_dir / "tensorboard").mkdir(exist_ok=True)
        self.events = open(self.out_dir / "tensorboard" / name, "ab")
        self.events.write(tfrecord(encode_event(time.time(), 0, file_version="brain.Event:2")))
        self.events.flush()

    def _drop_lines_after(self, step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their old lines (rewritten atomically)."""
        path = self.out_dir / METRICS_FILE
        if not path.is_file():
            return
        lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(path)

    def log(self, step: int, **values: float) -> None:
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "lr", "samples_per_s")})
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()
        scalars = {f"train/{k}": float(v) for k, v in values.items()}
        self.events.write(tfrecord(encode_event(time.time(), step, scalars)))
        self.events.flush()

    def close(self, summary: dict | None = None) -> None:
        self.bar.close()
        if not self.enabled:
            return
        self.jsonl.close()
        self.events.close()
        if summary is not None:
            write_json_atomic(self.out_dir / SUMMARY_FILE, summary)
