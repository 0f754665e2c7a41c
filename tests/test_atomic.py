"""Atomic files and folders: all-or-nothing writes, umask permissions, no replacing what was not asked for."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from PIL import Image

from ckpt_convert.model_folder import convert_model_folder
from mindglm_image.atomic import atomic_dir, atomic_file, check_destination, save_image_atomic, write_json_atomic
from mindglm_image.tiny_model import make_tiny_model
from mindglm_image.weights.safetensors_io import TensorData, write_safetensors
from synthetic_checkpoint import write_model_folder


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _modes(folder):
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_file(path) as fh:
        fh.write(b"half")
        raise RuntimeError("crash")
    assert path.read_text() == '{\n  "v": 1\n}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_failed_folder_build_keeps_the_old_folder(tmp_path):
    dst = tmp_path / "d"
    with atomic_dir(dst) as work:
        (work / "x").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(dst) as work:
        (work / "x").write_text("new")
        raise RuntimeError("crash")
    assert (dst / "x").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_image_format_follows_the_extension(tmp_path):
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    for name, fmt in (("a.png", "PNG"), ("b.JPG", "JPEG"), ("c.webp", "WEBP")):
        save_image_atomic(img, tmp_path / name)
        assert Image.open(tmp_path / name).format == fmt
    with pytest.raises(ValueError, match=r"'\.txt' names no image format"):
        save_image_atomic(img, tmp_path / "d.txt")
    assert not (tmp_path / "d.txt").exists()


def test_files_and_folders_follow_the_umask(tmp_path, umask_027):
    """Weights, configs and folders of make-tiny, convert and plain writes are 0640 / 0750 under umask 027."""
    write_safetensors(tmp_path / "w.safetensors", [TensorData.from_array("x", np.ones(3, np.float32))])
    write_json_atomic(tmp_path / "c.json", {})
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "c.json").stat().st_mode) == 0o640
    tiny = make_tiny_model(tmp_path / "tiny", progress=False)
    write_model_folder(tmp_path / "hf")
    (tmp_path / "hf" / "scheduler" / "scheduler_config.json").chmod(0o600)  # a private source file
    convert_model_folder(tmp_path / "hf", tmp_path / "ms")
    for folder in (tiny, tmp_path / "ms"):
        modes = _modes(folder)
        assert {m for p, m in modes.items() if (folder / p).is_dir()} == {0o750}, modes
        assert {m for p, m in modes.items() if (folder / p).is_file()} == {0o640}, modes


def test_replaces_only_what_it_was_asked_to(tmp_path):
    is_model = lambda p: (p / "model_index.json").is_file()  # noqa: E731
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", False, is_model, "model folder", "--overwrite")
    check_destination(tmp_path / "new", False, is_model, "model folder", "--overwrite")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a folder"):
        check_destination(tmp_path / "file", True, is_model, "model folder", "--overwrite")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "me.jpg").write_text("x")
    with pytest.raises(FileExistsError, match="not empty; choose a new folder, or replace it with --overwrite"):
        check_destination(tmp_path / "photos", False, is_model, "model folder", "--overwrite")
    with pytest.raises(FileExistsError, match="photos is not a model folder; --overwrite replaces only a model folder"):
        check_destination(tmp_path / "photos", True, is_model, "model folder", "--overwrite")
    (tmp_path / "photos" / "model_index.json").write_text("{}")
    check_destination(tmp_path / "photos", True, is_model, "model folder", "--overwrite")
