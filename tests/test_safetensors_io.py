"""Our streaming safetensors reader/writer: exact bf16 bytes, interoperability, clear corruption errors."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mindglm_image.weights.safetensors_io import CheckpointError, SafetensorsFile, TensorData, write_safetensors


def test_reads_torch_bf16_exactly(reference_fixture):
    folder = reference_fixture("bf16_tensors")
    values = np.load(folder / "values.npz")
    f = SafetensorsFile(folder / "mixed.safetensors")
    assert f.infos["a.weight"].dtype == "BF16" and f.infos["c.f32"].dtype == "F32"
    for name in ("a.weight", "b.bias", "c.f32"):
        np.testing.assert_array_equal(f.get(name).array(), values[name.replace(".", "_")])


def test_write_then_read_is_bit_exact_and_readable_by_safetensors(tmp_path):
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((4, 6)).astype(np.float32)
    i64 = np.arange(10, dtype=np.int64)
    bf16 = TensorData.from_array("w.bf16", f32, "BF16")
    write_safetensors(tmp_path / "x.safetensors", [TensorData.from_array("w.f32", f32), TensorData.from_array("ids", i64), bf16],
                      metadata={"format": "ms"})
    back = SafetensorsFile(tmp_path / "x.safetensors")
    assert back.metadata == {"format": "ms"}
    np.testing.assert_array_equal(back.get("w.f32").array(), f32)
    np.testing.assert_array_equal(back.get("ids").array(), i64)
    assert bytes(back.get("w.bf16").raw) == bytes(bf16.raw)
    # bf16 keeps the top 16 bits with round-to-nearest-even: error below 2^-8 relative
    assert np.abs(back.get("w.bf16").array() - f32).max() <= np.abs(f32).max() * 2**-8
    stock = load_file(str(tmp_path / "x.safetensors"))
    np.testing.assert_array_equal(stock["w.f32"], f32)
    np.testing.assert_array_equal(stock["ids"], i64)


def test_reads_files_written_by_safetensors(tmp_path):
    arr = np.linspace(-1, 1, 12, dtype=np.float16).reshape(3, 4)
    save_file({"h": arr}, str(tmp_path / "h.safetensors"))
    np.testing.assert_array_equal(SafetensorsFile(tmp_path / "h.safetensors").get("h").array(), arr)


def test_bf16_rounding_matches_round_to_nearest_even():
    # 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0)
    x = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, np.nan], dtype=np.float32)
    got = TensorData.from_array("x", x, "BF16").array()
    np.testing.assert_array_equal(got[:3], np.array([1.0, 1.0 + 2**-6, -2.5], dtype=np.float32))
    assert np.isnan(got[3])


def test_truncated_file_names_tensor_and_file(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, [TensorData.from_array("a", np.ones(100, np.float32)), TensorData.from_array("b", np.ones(100, np.float32))])
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"tensor b .*truncated"):
        SafetensorsFile(path)


def test_corrupt_header_is_reported(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{nope")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        SafetensorsFile(path)
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="too short"):
        SafetensorsFile(path)


def test_inconsistent_shape_and_offsets_rejected(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(CheckpointError, match=r"tensor w holds 8 bytes"):
        SafetensorsFile(path)
