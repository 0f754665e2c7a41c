"""Atomic files and folders: a crash leaves the old content or the new one, never half of either.

Also ``fingerprint``: a cheap identity of a file or folder, so resumable work can tell that what it
started from was replaced.

Files are written to a hidden temporary beside the target, fsynced and renamed over it; folders are built
in ``.<name>.partial`` beside the target and swapped in when complete. Everything written here gets the
permissions the user's umask gives a newly created file or folder (``tempfile`` would give 0600/0700,
which hides shared model folders from the other users of a machine).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from PIL import Image


def _umask() -> int:
    try:  # Linux reports it without changing it
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)  # elsewhere reading the umask means setting it; put it straight back
        os.umask(mask)
        return mask


def file_mode() -> int:
    """Mode of a new file under the current umask (``open()`` semantics: 0666 minus the umask)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary beside ``path``; on a clean exit it is fsynced, given the umask's mode and renamed to
    ``path``; on any error (or kill) ``path`` is untouched and the temporary removed (or left hidden)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """JSON with 2-space indent and a final newline (the layout Hugging Face config files use)."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def image_format(path: str | os.PathLike) -> str:
    """The PIL format a file extension names (``.png`` -> PNG, ``.jpg`` -> JPEG ...); ValueError if none can be written."""
    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"{path}: the extension {suffix or '(none)'!r} names no image format that can be written; "
                         "use .png (lossless), .jpg or .webp")
    return fmt


def save_image_atomic(image: Image.Image, path: str | os.PathLike) -> None:
    """Save in the format the extension names (see ``image_format``), atomically."""
    fmt = image_format(path)
    with atomic_file(path) as fh:
        image.save(fh, format=fmt)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file's bytes atomically; the copy gets the umask's mode, not the source's."""
    with open(src, "rb") as fin, atomic_file(dst) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy a folder atomically (built in ``partial_dir(dst)``), files with the umask's mode."""
    with atomic_dir(dst) as work:
        for item in sorted(src.rglob("*")):
            if item.is_file():
                copy_file(item, work / item.relative_to(src))


def partial_dir(dst: Path) -> Path:
    """The work folder in which ``dst`` is built: hidden, beside it, so the final rename stays on one disk."""
    return dst.with_name(f".{dst.name}.partial")


def check_destination(dst: Path, overwrite: bool, replaceable: Callable[[Path], bool], what: str, flag: str) -> None:
    """Refuse to put a folder at ``dst`` when something is there, unless it is an empty folder, or
    ``overwrite`` is set and ``replaceable(dst)`` says it is a folder of the same kind (``what``)."""
    if not dst.exists():
        return
    if not dst.is_dir():
        raise FileExistsError(f"{dst} exists and is not a folder; choose another path for the {what}")
    if not any(dst.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"{dst} already exists and is not empty; choose a new folder, or replace it "
                              f"with {flag} (only a {what} is replaced)")
    if not replaceable(dst):
        raise FileExistsError(f"{dst} is not a {what}; {flag} replaces only a {what}, so nothing was deleted; "
                              "choose a new folder or empty this one yourself")


def replace_dir(new: Path, dst: Path) -> None:
    """Move the finished folder ``new`` to ``dst``; an existing ``dst`` is swapped out only once ``new`` is
    ready, so a failure at any point leaves either the old folder or the new one under ``dst``."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(new, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dst)


@contextlib.contextmanager
def atomic_dir(dst: str | os.PathLike, resume: bool = False) -> Iterator[Path]:
    """Build a folder in ``partial_dir(dst)`` and move it to ``dst`` on a clean exit.

    ``resume=False``: the work folder starts empty and is removed on failure. ``resume=True``: what an
    earlier, failed run left there is kept (the caller decides what of it is reusable), and so is what this
    run finished before failing.
    """
    dst = Path(dst)
    work = partial_dir(dst)
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)  # mkdir honours the umask (tempfile.mkdtemp would not)
    try:
        yield work
        replace_dir(work, dst)
    except BaseException:
        if not resume:
            shutil.rmtree(work, ignore_errors=True)
        raise


def fingerprint(path: Path) -> str:
    """sha256 over the relative path, size and modification time of every file under ``path`` (or of the file
    ``path``): reading no content, it changes when a file is replaced, re-downloaded or edited."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
