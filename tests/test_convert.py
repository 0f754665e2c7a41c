"""Checkpoint conversion: bit-exact round trips, clear errors on bad checkpoints, crash safety, verify."""
from __future__ import annotations

import json

import numpy as np
import pytest

import ckpt_convert.convert as convert_mod
import ckpt_convert.model_folder as model_folder_mod
from ckpt_convert.convert import MANIFEST, ConversionConfig, convert_component
from ckpt_convert.model_folder import convert_model_folder
from ckpt_convert.verify import verify_model_folder
from mindglm_image.cli import main as cli_main
from mindglm_image.weights.checkpoint import ShardedCheckpoint
from mindglm_image.weights.components import COMPONENTS, MS_STEM, load_component
from mindglm_image.weights.safetensors_io import CheckpointError, SafetensorsFile, TensorData, write_safetensors
from synthetic_checkpoint import TINY_VAE, write_component, write_model_folder

VAE = COMPONENTS["vae"]


def test_round_trip_hf_ms_hf_is_bit_exact(tmp_path):
    tensors = write_model_folder(tmp_path / "hf")
    small = ConversionConfig(max_shard_bytes=64 * 1024)
    convert_model_folder(tmp_path / "hf", tmp_path / "ms", small)
    convert_model_folder(tmp_path / "ms", tmp_path / "back", ConversionConfig(direction="ms2hf", max_shard_bytes=64 * 1024))
    ms = ShardedCheckpoint(tmp_path / "ms" / "vae", MS_STEM)
    back = ShardedCheckpoint(tmp_path / "back" / "vae", VAE.hf_stem)
    assert len(ms.files) > 1 and ms.index_path is not None  # re-sharded with an index
    assert sorted(back.keys()) == sorted(tensors)
    for name, t in tensors.items():
        got = back.get(name)
        assert got.dtype == "BF16" and got.shape == t.shape
        assert bytes(got.raw) == bytes(t.raw), name
    assert (tmp_path / "back" / "scheduler" / "scheduler_config.json").is_file()
    assert json.loads((tmp_path / "back" / "vae" / "config.json").read_text()) == TINY_VAE
    assert verify_model_folder(tmp_path / "ms", source=tmp_path / "hf") == []
    assert verify_model_folder(tmp_path / "back", source=tmp_path / "ms") == []


def test_converted_weights_load_into_the_cell(tmp_path):
    tensors = write_component(tmp_path / "hf", "vae", TINY_VAE, dtype="F32", shards=2)
    convert_component(VAE, tmp_path / "hf" / "vae", tmp_path / "ms" / "vae")
    cell = load_component(VAE, tmp_path / "ms" / "vae")
    params = cell.parameters_dict()
    for name, t in tensors.items():
        np.testing.assert_array_equal(params[name].asnumpy(), t.array())


def test_dtype_conversion_on_request(tmp_path):
    tensors = write_component(tmp_path / "hf", "vae", TINY_VAE, dtype="BF16", shards=1)
    convert_component(VAE, tmp_path / "hf" / "vae", tmp_path / "ms", ConversionConfig(dtype="F32"))
    ms = ShardedCheckpoint(tmp_path / "ms", MS_STEM)
    name = next(iter(tensors))
    assert ms.get(name).dtype == "F32"
    np.testing.assert_array_equal(ms.get(name).array(), tensors[name].array())  # bf16 -> f32 is exact


def _rewrite(part, stem, edit):
    """Apply ``edit(dict name->TensorData) -> dict`` to a single-shard component."""
    path = part / f"{stem}.safetensors"
    f = SafetensorsFile(path)
    tensors = {t.name: TensorData(t.name, t.dtype, t.shape, np.array(t.raw)) for t in f}
    del f
    write_safetensors(path, list(edit(tensors).values()))


@pytest.mark.parametrize("case, message", [
    ("shape", r"tensor encoder.conv_in.weight in .*diffusion_pytorch_model.safetensors has shape \[32, 3, 3, 2\]"),
    ("missing", r"missing 1 tensor\(s\) the model needs: \['decoder.conv_out.bias'\]"),
    ("extra", r"unexpected tensor encoder.extra.weight in .*diffusion_pytorch_model.safetensors"),
    ("dtype", r"tensor quant_conv.bias in .*diffusion_pytorch_model.safetensors has dtype I64"),
])
def test_bad_checkpoints_fail_naming_tensor_and_file(tmp_path, case, message):
    write_component(tmp_path / "hf", "vae", TINY_VAE, shards=1)
    part = tmp_path / "hf" / "vae"
    (part / f"{VAE.hf_stem}.safetensors.index.json").unlink()
    (part / f"{VAE.hf_stem}-00001-of-00001.safetensors").rename(part / f"{VAE.hf_stem}.safetensors")

    def edit(t):
        if case == "shape":
            t["encoder.conv_in.weight"] = TensorData.from_array("encoder.conv_in.weight", np.zeros((32, 3, 3, 2), np.float32))
        elif case == "missing":
            del t["decoder.conv_out.bias"]
        elif case == "extra":
            t["encoder.extra.weight"] = TensorData.from_array("encoder.extra.weight", np.zeros(3, np.float32))
        else:
            t["quant_conv.bias"] = TensorData.from_array("quant_conv.bias", np.zeros(t["quant_conv.bias"].shape, np.int64))
        return t

    _rewrite(part, VAE.hf_stem, edit)
    with pytest.raises(CheckpointError, match=message):
        convert_component(VAE, part, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_shard_fails_naming_file(tmp_path):
    write_component(tmp_path / "hf", "vae", TINY_VAE, shards=3)
    shard = tmp_path / "hf" / "vae" / f"{VAE.hf_stem}-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"00002-of-00003.safetensors: tensor .* truncated"):
        convert_component(VAE, tmp_path / "hf" / "vae", tmp_path / "out")


def test_crash_mid_conversion_leaves_nothing_verify_accepts_and_rerun_resumes(tmp_path, monkeypatch):
    write_model_folder(tmp_path / "hf")
    real = convert_mod.write_safetensors_streamed
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(convert_mod, "write_safetensors_streamed", crashing)
    small = ConversionConfig(max_shard_bytes=64 * 1024)
    with pytest.raises(KeyboardInterrupt):
        convert_model_folder(tmp_path / "hf", tmp_path / "ms", small)
    assert not (tmp_path / "ms").exists()
    assert verify_model_folder(tmp_path / "ms") != []
    assert verify_model_folder(tmp_path / ".ms.partial") != []
    monkeypatch.setattr(convert_mod, "write_safetensors_streamed", real)
    convert_model_folder(tmp_path / "hf", tmp_path / "ms", small)
    assert verify_model_folder(tmp_path / "ms", source=tmp_path / "hf") == []
    assert not (tmp_path / ".ms.partial").exists()


def test_existing_good_output_survives_a_failed_rerun(tmp_path, monkeypatch):
    write_model_folder(tmp_path / "hf")
    convert_model_folder(tmp_path / "hf", tmp_path / "ms")
    before = (tmp_path / "ms" / "vae" / MANIFEST).read_bytes()
    monkeypatch.setattr(convert_mod, "write_safetensors_streamed", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    (tmp_path / ".ms.partial").mkdir()
    with pytest.raises(OSError):
        convert_model_folder(tmp_path / "hf", tmp_path / "ms", overwrite=True)
    assert (tmp_path / "ms" / "vae" / MANIFEST).read_bytes() == before
    assert verify_model_folder(tmp_path / "ms") == []


def test_verify_catches_tampering(tmp_path):
    write_model_folder(tmp_path / "hf")
    convert_model_folder(tmp_path / "hf", tmp_path / "ms")
    shard = next((tmp_path / "ms" / "vae").glob(f"{MS_STEM}*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify_model_folder(tmp_path / "ms")
    assert len(problems) == 1 and "bytes do not match the manifest checksum" in problems[0]


def test_cli_convert_and_verify(tmp_path, capsys):
    write_model_folder(tmp_path / "hf")
    assert cli_main(["convert", "--from", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "ms")]) == 0
    assert cli_main(["verify", str(tmp_path / "ms"), "--source", str(tmp_path / "hf")]) == 0
    assert cli_main(["verify", str(tmp_path / "nowhere")]) == 1
    assert cli_main(["convert", "--from", "hf", "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "x")]) == 2
    assert "model_index.json not found" in capsys.readouterr().err


_KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, sys.argv[3])
import ckpt_convert.convert as convert_mod
import ckpt_convert.model_folder as model_folder_mod
from ckpt_convert.convert import ConversionConfig
from ckpt_convert.model_folder import convert_model_folder
real, calls = convert_mod.write_safetensors_streamed, [0]
def killed_on_second_shard(path, specs, payloads, metadata=None):
    calls[0] += 1
    if calls[0] == 2:
        next(iter(payloads))             # mid-shard: a temp file is open and half written
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path, specs, payloads, metadata)
convert_mod.write_safetensors_streamed = killed_on_second_shard
convert_model_folder(sys.argv[1], sys.argv[2], ConversionConfig(max_shard_bytes=64 * 1024))
"""


def test_sigkill_mid_conversion_then_rerun(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    write_model_folder(tmp_path / "hf")
    tests_dir = str(Path(__file__).parent)
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "hf"), str(tmp_path / "ms"), tests_dir],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (tmp_path / "ms").exists()
    assert verify_model_folder(tmp_path / "ms") != []
    assert verify_model_folder(tmp_path / ".ms.partial") != []
    assert any(p.name.startswith(".") for p in (tmp_path / ".ms.partial").rglob("*"))  # the killed run's temporaries
    convert_model_folder(tmp_path / "hf", tmp_path / "ms", ConversionConfig(max_shard_bytes=64 * 1024))
    assert verify_model_folder(tmp_path / "ms", source=tmp_path / "hf") == []
    assert not [p for p in (tmp_path / "ms").rglob(".*")]


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dst_is_replaced_only_when_asked_and_only_if_a_model_folder(tmp_path, capsys):
    """Regression (issue 13, defect 1): --dst used to replace any existing folder without a word."""
    write_model_folder(tmp_path / "hf")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "me.jpg").write_bytes(b"precious")
    for extra in ([], ["--overwrite"]):
        assert cli_main(["convert", "--from", "hf", "--src", str(tmp_path / "hf"), "--dst", str(photos), *extra]) == 2
        assert _tree(photos) == {"me.jpg": b"precious"}
    assert "photos is not a model folder; --overwrite replaces only a model folder" in capsys.readouterr().err
    write_model_folder(tmp_path / "other", seed=1)
    convert_model_folder(tmp_path / "other", tmp_path / "ms")
    before = _tree(tmp_path / "ms")
    assert cli_main(["convert", "--from", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "ms")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err and _tree(tmp_path / "ms") == before
    assert cli_main(["convert", "--from", "hf", "--src", str(tmp_path / "hf"), "--dst", str(tmp_path / "ms"), "--overwrite"]) == 0
    assert verify_model_folder(tmp_path / "ms", source=tmp_path / "hf") == []
    with pytest.raises(CheckpointError, match="overlap"):
        convert_model_folder(tmp_path / "hf", tmp_path / "hf" / "inside")


@pytest.mark.parametrize("second", ["other_source", "other_dtype"])
def test_resume_only_continues_the_same_conversion(tmp_path, monkeypatch, second):
    """Regression (issue 13, defect 2): a rerun with another --src or --dtype kept the first run's components."""
    write_model_folder(tmp_path / "a", seed=0)
    b = write_model_folder(tmp_path / "b", seed=1)
    real = model_folder_mod.copy_file
    monkeypatch.setattr(model_folder_mod, "copy_file", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):  # fails after vae/ is converted, before the folder is complete
        convert_model_folder(tmp_path / "a", tmp_path / "ms")
    assert (tmp_path / ".ms.partial" / "vae" / MANIFEST).is_file()
    monkeypatch.setattr(model_folder_mod, "copy_file", real)
    if second == "other_source":
        convert_model_folder(tmp_path / "b", tmp_path / "ms")
        assert verify_model_folder(tmp_path / "ms", source=tmp_path / "b") == []
        got = ShardedCheckpoint(tmp_path / "ms" / "vae", MS_STEM)
        assert all(bytes(got.get(n).raw) == bytes(t.raw) for n, t in b.items())
    else:
        convert_model_folder(tmp_path / "a", tmp_path / "ms", ConversionConfig(dtype="F32"))
        got = ShardedCheckpoint(tmp_path / "ms" / "vae", MS_STEM)
        assert {got.info(n).dtype for n in got.keys()} == {"F32"}
        assert verify_model_folder(tmp_path / "ms", dtype="F32") == []


def test_verify_covers_every_file_and_the_dtype(tmp_path, capsys):
    """Regression (issue 13, defect 3): configs, scheduler and other non-weight files were not verified."""
    write_model_folder(tmp_path / "hf")
    convert_model_folder(tmp_path / "hf", tmp_path / "ms", ConversionConfig(dtype="F16"))
    ms = tmp_path / "ms"
    assert verify_model_folder(ms, source=tmp_path / "hf", dtype="F16") == []
    assert cli_main(["verify", str(ms), "--dtype", "BF16"]) == 1
    assert "tensor(s) are not BF16 as --dtype asks for" in capsys.readouterr().err
    (ms / "scheduler" / "scheduler_config.json").write_text("{oops")
    (ms / "vae" / "config.json").write_text((ms / "vae" / "config.json").read_text().replace("32", "48"))
    (ms / "vae" / "notes.txt").write_text("x")
    (ms / "model_index.json").unlink()
    (ms / "model_index.json").write_text((tmp_path / "hf" / "model_index.json").read_text())  # same bytes: fine
    problems = "\n".join(verify_model_folder(ms))
    assert "scheduler_config.json: bytes differ" in problems and "scheduler_config.json: not valid JSON" in problems
    assert "vae/config.json: bytes differ" in problems and "notes.txt: not covered by the conversion manifest" in problems
    assert "model_index.json" not in problems
    (tmp_path / "hf" / "scheduler" / "scheduler_config.json").write_text("{}")
    (ms / "scheduler" / "scheduler_config.json").write_text((tmp_path / "hf" / "scheduler" / "scheduler_config.json").read_text())
    assert "source " + str(tmp_path / "hf" / "scheduler" / "scheduler_config.json") + " changed" in "\n".join(
        verify_model_folder(ms, source=tmp_path / "hf"))
